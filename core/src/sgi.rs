//! ICC_SGI1R_EL1: which vCPUs an SGI the guest generates goes to (Arm IHI 0069, 12.2.24).

/// Register fields.
const TARGET_LIST_MASK: u64 = 0xffff;
const AFF1_SHIFT: u32 = 16;
const INTID_SHIFT: u32 = 24;
const AFF2_SHIFT: u32 = 32;
const IRM: u64 = 1 << 40;
const RS_SHIFT: u32 = 44;
const AFF3_SHIFT: u32 = 48;
/// Each target list covers 16 Aff0 values, selected by RS.
const TARGETS_PER_RANGE: u64 = 16;

/// A decoded write to ICC_SGI1R_EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgiRequest {
    /// The SGI: 0 to 15.
    pub intid: u32,
    /// IRM = 1: every PE except the sender.
    pub all_but_self: bool,
    /// Aff3.Aff2.Aff1 of the targets, as MPIDR bits (Aff0 cleared).
    cluster: u64,
    /// First Aff0 value that bit 0 of the target list names.
    range_base: u64,
    target_list: u64,
}

impl SgiRequest {
    pub fn decode(value: u64) -> Self {
        let field = |shift: u32| (value >> shift) & 0xff;
        Self {
            intid: ((value >> INTID_SHIFT) & 0xf) as u32,
            all_but_self: value & IRM != 0,
            cluster: field(AFF3_SHIFT) << 32 | field(AFF2_SHIFT) << 16 | field(AFF1_SHIFT) << 8,
            range_base: ((value >> RS_SHIFT) & 0xf) * TARGETS_PER_RANGE,
            target_list: value & TARGET_LIST_MASK,
        }
    }

    /// Whether the PE with MPIDR affinity `target` receives the SGI sent by `sender`.
    pub fn targets(&self, target: u64, sender: u64) -> bool {
        if self.all_but_self {
            return target != sender;
        }
        let aff0 = target & 0xff;
        target & !0xff == self.cluster
            && (self.range_base..self.range_base + TARGETS_PER_RANGE).contains(&aff0)
            && self.target_list & (1 << (aff0 - self.range_base)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_lists_ranges_and_clusters() {
        // SGI 3 to Aff0 0 and 2 of cluster Aff1 = 0.
        let r = SgiRequest::decode(3 << INTID_SHIFT | 0b101);
        assert_eq!(r.intid, 3);
        assert!(r.targets(0, 1) && r.targets(2, 1) && !r.targets(1, 1) && !r.targets(0x100, 1));
        // RS = 1 selects Aff0 16..31; Aff1 = 1.
        let r = SgiRequest::decode(1 << RS_SHIFT | 1 << AFF1_SHIFT | 0b10);
        assert!(r.targets(0x111, 0) && !r.targets(0x101, 0) && !r.targets(0x11, 0));
        // Aff2 and Aff3 must match too.
        let r = SgiRequest::decode(2 << AFF2_SHIFT | 4 << AFF3_SHIFT | 1);
        assert!(r.targets(4 << 32 | 2 << 16, 9) && !r.targets(2 << 16, 9));
        // IRM: everyone but the sender, whatever the list says.
        let r = SgiRequest::decode(IRM | 1 << INTID_SHIFT);
        assert!(r.targets(1, 0) && r.targets(5, 0) && !r.targets(0, 0));
    }
}
