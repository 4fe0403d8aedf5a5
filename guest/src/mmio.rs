//! Device register access: every access is exactly one aligned 32-bit load or store,
//! because the hypervisor emulates these registers by trapping and decoding the instruction.

/// Reads a 32-bit device register.
///
/// # Safety
/// `addr` must be a 4-byte aligned device register mapped as device memory.
#[inline(always)]
pub unsafe fn read32(addr: usize) -> u32 {
    // SAFETY: the caller guarantees a mapped, aligned device register.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes a 32-bit device register.
///
/// # Safety
/// As [`read32`]; the write must be one the device expects.
#[inline(always)]
pub unsafe fn write32(addr: usize, value: u32) {
    // SAFETY: the caller guarantees a mapped, aligned device register.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}
