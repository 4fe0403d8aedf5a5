//! The emulated GICv3 (Arm IHI 0069): the guest-visible memory map of the interrupt controller.

/// Size of the distributor's register page (GICD, IHI 0069 12.8).
pub const GICD_SIZE: u64 = 0x1_0000;
/// Size of one redistributor: the RD_base frame and the SGI_base frame, 64 KiB each
/// (IHI 0069 12.10).
pub const GICR_FRAME_SIZE: u64 = 0x2_0000;
