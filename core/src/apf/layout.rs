//! The per-vCPU record's layout, the writeback granule it is laid out with, and the validation
//! of an `APF_ENABLE` request.

use asyncpf_contract::apf::{
    self as abi, FLAGS_ALL, FLAG_USER_ONLY, MAX_GRANULE, MIN_GRANULE, RING_ENTRIES, RING_ENTRY_BYTES,
};
use asyncpf_contract::smccc;
use core::fmt;
use core::ops::Range;

/// The highest CTR_EL0.CWG value the architecture defines (9: 512 words, 2 KiB); higher values
/// are reserved.
const CWG_MAX_DEFINED: u64 = 9;

/// The writeback granule in bytes that one CPU's CTR_EL0.CWG field (bits 27:24, log2 of the
/// granule in 4-byte words) stands for, as the record layout uses it:
///
/// * 0 ("no information") and the reserved values above 9 give [`MAX_GRANULE`], the
///   architectural maximum: the only safe assumption;
/// * granules below [`MIN_GRANULE`] are raised to it (two u64 fields need 16 bytes).
///
/// The hypervisor takes the largest result over all physical CPUs (big.LITTLE systems may
/// differ per CPU) and builds its [`Layout`] from that.
pub const fn cwg_bytes(cwg: u64) -> u64 {
    if cwg == 0 || cwg > CWG_MAX_DEFINED {
        return MAX_GRANULE;
    }
    let bytes = 4 << cwg;
    if bytes < MIN_GRANULE {
        MIN_GRANULE
    } else {
        bytes
    }
}

/// The granule the record is laid out with on a machine whose CPUs report these CTR_EL0.CWG
/// values: the largest [`cwg_bytes`] over all of them, so that no CPU's cache line can span a
/// host-written and a guest-written field. Every CPU must have reported before this is decided
/// (a big.LITTLE machine's CPUs may differ); `None` when no CPU has.
pub fn machine_granule(cwgs: impl IntoIterator<Item = u64>) -> Option<u64> {
    cwgs.into_iter().map(cwg_bytes).max()
}

/// The record's layout for one writeback granule: where each field lies, relative to the
/// record's start. Host-written fields (`pnp_token`, `pnp_address`, `ring_head`, the ring) and
/// the guest-written field (`ring_tail`) never share a granule, so a cache-line writeback by
/// one side never carries a stale copy of the other side's field.
///
/// | offset | bytes | writer | field |
/// |---|---|---|---|
/// | 0 | 8 | host | `pnp_token` |
/// | 8 | 8 | host | `pnp_address` |
/// | granule | 8 | host | `ring_head` |
/// | 2 · granule | 8 | guest | `ring_tail` |
/// | 3 · granule | [`RING_ENTRIES`] · 8 | host | the ring |
///
/// Every offset is a multiple of 8 and below [`Layout::bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    granule: u64,
}

/// A granule that is not a power of two between [`MIN_GRANULE`] and [`MAX_GRANULE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GranuleError(pub u64);

impl fmt::Display for GranuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apf: granule {} is not a power of two between {MIN_GRANULE} and {MAX_GRANULE} bytes", self.0)
    }
}

impl Layout {
    /// The layout for writeback granule `granule` in bytes: a power of two from
    /// [`MIN_GRANULE`] to [`MAX_GRANULE`].
    pub const fn new(granule: u64) -> Result<Self, GranuleError> {
        if granule.is_power_of_two() && granule >= MIN_GRANULE && granule <= MAX_GRANULE {
            Ok(Layout { granule })
        } else {
            Err(GranuleError(granule))
        }
    }

    /// The granule in bytes (what APF_FEATURES reports in x1).
    pub const fn granule(self) -> u64 {
        self.granule
    }

    /// Offset of `pnp_token`: the token of the page_not_present being delivered (host).
    pub const fn pnp_token(self) -> u64 {
        abi::offset_pnp_token(self.granule)
    }

    /// Offset of `pnp_address`: the faulting guest virtual address (host).
    pub const fn pnp_address(self) -> u64 {
        abi::offset_pnp_address(self.granule)
    }

    /// Offset of `ring_head`: entries produced, free-running (host).
    pub const fn ring_head(self) -> u64 {
        abi::offset_ring_head(self.granule)
    }

    /// Offset of `ring_tail`: entries consumed, free-running (guest).
    pub const fn ring_tail(self) -> u64 {
        abi::offset_ring_tail(self.granule)
    }

    /// Offset of the ring's first entry.
    pub const fn ring(self) -> u64 {
        abi::offset_ring(self.granule)
    }

    /// Offset of the entry that free-running position `position` uses: entry
    /// `position % RING_ENTRIES`.
    pub const fn ring_entry(self, position: u64) -> u64 {
        self.ring() + (position % RING_ENTRIES) * RING_ENTRY_BYTES
    }

    /// The record's size in bytes.
    pub const fn bytes(self) -> u64 {
        abi::record_bytes(self.granule)
    }
}

/// A record that passed [`validate_enable`]: where it is, its layout, and the guest's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    ipa: u64,
    layout: Layout,
    flags: u64,
}

impl Record {
    /// The record's guest physical address (granule-aligned).
    pub const fn ipa(&self) -> u64 {
        self.ipa
    }

    /// The record's layout.
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// The `APF_ENABLE` flags (only known ones).
    pub const fn flags(&self) -> u64 {
        self.flags
    }

    /// Whether the guest asked for [`FLAG_USER_ONLY`]: page_not_present only for faults from EL0.
    pub const fn user_only(&self) -> bool {
        self.flags & FLAG_USER_ONLY != 0
    }

    /// Whether the guest asked for [`FLAG_ALWAYS_DELIVER`](abi::FLAG_ALWAYS_DELIVER): the
    /// park-or-wait rule does not apply to it.
    pub const fn always_deliver(&self) -> bool {
        self.flags & abi::FLAG_ALWAYS_DELIVER != 0
    }

    /// The guest physical addresses the record covers; all of it lies in guest RAM. The
    /// hypervisor's [`RecordMemory`](super::RecordMemory) covers exactly this range (and keeps
    /// the pages resident while the record is in use: it may span several 4 KiB pages).
    pub const fn range(&self) -> Range<u64> {
        self.ipa..self.ipa + self.layout.bytes()
    }
}

/// Why an `APF_ENABLE` request is refused (SMCCC `INVALID_PARAMETER`, see
/// [`EnableError::smccc`]). Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// Flags outside [`FLAGS_ALL`]; `unknown` holds the unknown bits.
    UnknownFlags { unknown: u64 },
    /// The record's address is not a multiple of the granule.
    Misaligned { ipa: u64, granule: u64 },
    /// The record (`bytes` from `ipa`) does not lie entirely inside guest RAM, or its end
    /// wraps around the address space.
    OutsideRam { ipa: u64, bytes: u64 },
}

impl EnableError {
    /// The SMCCC return code for the guest: always `INVALID_PARAMETER`.
    pub const fn smccc(self) -> i64 {
        smccc::INVALID_PARAMETER
    }
}

impl fmt::Display for EnableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EnableError::UnknownFlags { unknown } => write!(f, "apf: unknown APF_ENABLE flags {unknown:#x}"),
            EnableError::Misaligned { ipa, granule } => {
                write!(f, "apf: record at {ipa:#x} is not aligned to the {granule}-byte granule")
            }
            EnableError::OutsideRam { ipa, bytes } => {
                write!(f, "apf: record of {bytes:#x} bytes at {ipa:#x} is not inside guest RAM")
            }
        }
    }
}

/// Validates `APF_ENABLE(record_ipa, flags)` for a VM whose guest RAM is `ram` and whose
/// records are laid out by `layout`. Checked in this order: the flags (no unknown bit), the
/// alignment (to the granule), the extent (`record_ipa .. record_ipa + layout.bytes()` inside
/// `ram`, without wrapping; an empty or inverted `ram` contains nothing).
pub fn validate_enable(record_ipa: u64, flags: u64, layout: Layout, ram: Range<u64>) -> Result<Record, EnableError> {
    let unknown = flags & !FLAGS_ALL;
    if unknown != 0 {
        return Err(EnableError::UnknownFlags { unknown });
    }
    if !record_ipa.is_multiple_of(layout.granule()) {
        return Err(EnableError::Misaligned { ipa: record_ipa, granule: layout.granule() });
    }
    let bytes = layout.bytes();
    match record_ipa.checked_add(bytes) {
        Some(end) if record_ipa >= ram.start && end <= ram.end => Ok(Record { ipa: record_ipa, layout, flags }),
        _ => Err(EnableError::OutsideRam { ipa: record_ipa, bytes }),
    }
}

/// Why an APF_PIN request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// Not page-aligned, empty, wrapping, or not inside guest RAM: INVALID_PARAMETER.
    Invalid,
    /// More pages than the quota leaves: OUT_OF_QUOTA.
    OverQuota { asked: u64, left: u64 },
}

impl PinError {
    /// The SMCCC answer.
    pub const fn smccc(self) -> i64 {
        match self {
            PinError::Invalid => smccc::INVALID_PARAMETER,
            PinError::OverQuota { .. } => abi::OUT_OF_QUOTA,
        }
    }
}

/// The pages (numbers from the start of `ram`, `page_bytes` each) that APF_PIN(ipa, bytes)
/// asks for, if the request is valid and `newly(pages)` (how many of them are not pinned yet)
/// fits in what `quota` pages leave after `pinned` ones.
pub fn validate_pin(
    ipa: u64,
    bytes: u64,
    ram: Range<u64>,
    page_bytes: u64,
    pinned: u64,
    quota: u64,
    newly: impl FnOnce(Range<u64>) -> u64,
) -> Result<Range<u64>, PinError> {
    let end = ipa.checked_add(bytes).ok_or(PinError::Invalid)?;
    if bytes == 0 || !ipa.is_multiple_of(page_bytes) || !bytes.is_multiple_of(page_bytes) {
        return Err(PinError::Invalid);
    }
    if ipa < ram.start || end > ram.end {
        return Err(PinError::Invalid);
    }
    let pages = (ipa - ram.start) / page_bytes..(end - ram.start) / page_bytes;
    let asked = newly(pages.clone());
    let left = quota.saturating_sub(pinned);
    if asked > left {
        return Err(PinError::OverQuota { asked, left });
    }
    Ok(pages)
}

/// The APF_PIN quota of a VM with `resident_pages` of host memory: a quarter of it, so that
/// pinned pages can never starve the pager.
pub const fn pin_quota(resident_pages: u64) -> u64 {
    resident_pages / 4
}
