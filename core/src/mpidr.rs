//! MPIDR_EL1 affinity fields (Arm ARM D23.2 "MPIDR_EL1"), the processor identity that device
//! tree `cpu` nodes, `GICD_IROUTER<n>` and GICR_TYPER all express in their own layout.
//!
//! An *affinity* in this crate is an MPIDR_EL1 value reduced to its four affinity fields, in
//! MPIDR's own layout: Aff3 in bits 39:32, Aff2 in 23:16, Aff1 in 15:8, Aff0 in 7:0. GICD_IROUTER
//! uses exactly this layout.

/// Bit position of Aff3.
pub const AFF3_SHIFT: u32 = 32;
/// Aff3.
pub const AFF3_MASK: u64 = 0xff << AFF3_SHIFT;
/// Aff2, Aff1 and Aff0 together.
pub const AFF2_0_MASK: u64 = 0x00ff_ffff;
/// Every affinity field.
pub const AFFINITY_MASK: u64 = AFF3_MASK | AFF2_0_MASK;

/// The affinity fields of an MPIDR_EL1 value (bit 31 RES1, U, MT and reserved bits dropped).
pub const fn affinity(mpidr: u64) -> u64 {
    mpidr & AFFINITY_MASK
}

/// The affinity packed into 32 bits as Aff3:Aff2:Aff1:Aff0 (GICR_TYPER.Affinity_Value).
pub const fn packed32(mpidr: u64) -> u32 {
    (((mpidr & AFF3_MASK) >> (AFF3_SHIFT - 24)) | (mpidr & AFF2_0_MASK)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert_eq!(affinity(0xC100_0000 | 0x0001_0203), 0x0001_0203);
        assert_eq!(affinity(0xAB_8000_0001), 0xAB_0000_0001);
        assert_eq!(packed32(0xAB_8012_3456), 0xAB12_3456);
        assert_eq!(packed32(0x8000_0000), 0);
    }
}
