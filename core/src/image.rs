//! The arm64 Linux kernel `Image` header and where a loader places the image.
//!
//! Follows Linux `Documentation/arch/arm64/booting.rst`, section "Call the kernel image":
//!
//! ```text
//! 0x00  u32 code0        executable code
//! 0x04  u32 code1        executable code
//! 0x08  u64 text_offset  image load offset, little endian
//! 0x10  u64 image_size   effective image size (including BSS), little endian
//! 0x18  u64 flags        kernel flags, little endian
//! 0x20  u64 res2, res3, res4
//! 0x38  u32 magic        0x644d5241, "ARM\x64"
//! 0x3c  u32 res5         PE/COFF header offset for EFI
//! ```
//!
//! Policy decisions that booting.rst leaves to the loader:
//! * **Old kernels** (before v3.17) have `image_size == 0`; their `text_offset` may then be in
//!   the kernel's own endianness, and booting.rst says it "can be assumed to be 0x80000". We
//!   accept such images, use `text_offset = 0x80000`, and report the size as unknown
//!   ([`ImageHeader::image_size`] is then the file length and [`ImageHeader::size_known`] is
//!   false): the loader must leave the rest of RAM after the image to the kernel.
//! * `text_offset` must be 4 KiB aligned and below [`MAX_TEXT_OFFSET`]. booting.rst sets no
//!   upper bound (Linux used 0x80000 and, since v5.8, 0); the asyncpf guest kernel uses
//!   0x200000 so that both QEMU and this loader place it at RAM base + 2 MiB. Whether the image
//!   then fits in RAM is the loader's check.
//! * Big-endian kernels are rejected: the hypervisor runs little-endian guests only.

use core::fmt;

/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 64;
/// `"ARM\x64"` read as a little-endian u32.
pub const MAGIC: u32 = 0x644d_5241;
/// The `text_offset` booting.rst tells loaders to assume when `image_size` is zero.
pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// The image must be placed `text_offset` bytes above a base aligned to this.
pub const BASE_ALIGN: u64 = 2 << 20;
/// `text_offset` values at or above this are rejected as nonsense (1 GiB).
pub const MAX_TEXT_OFFSET: u64 = 1 << 30;
/// Required alignment of `text_offset`.
pub const TEXT_OFFSET_ALIGN: u64 = 4 << 10;
/// A loader keeps its boot stub in the lowest bytes of RAM; an image whose `text_offset` would
/// place it inside these bytes is moved up by one [`BASE_ALIGN`] (QEMU `hw/arm/boot.c` does
/// the same with its 4 KiB `BOOTLOADER_MAX_SIZE`).
pub const BOOT_STUB_RESERVE: u64 = 4 << 10;

/// Byte offsets of header fields.
mod offset {
    pub const TEXT_OFFSET: usize = 0x08;
    pub const IMAGE_SIZE: usize = 0x10;
    pub const FLAGS: usize = 0x18;
    pub const MAGIC: usize = 0x38;
}

/// Bit fields of `flags`.
pub mod flags {
    /// Bit 0: kernel endianness, 1 = big-endian.
    pub const BIG_ENDIAN: u64 = 1 << 0;
    /// Bits 2:1: kernel page size.
    pub const PAGE_SIZE_SHIFT: u32 = 1;
    pub const PAGE_SIZE_MASK: u64 = 0b11 << PAGE_SIZE_SHIFT;
    /// Bit 3: 1 = the 2 MiB aligned base may be anywhere in physical memory, 0 = as close as
    /// possible to the base of DRAM.
    pub const PHYS_PLACEMENT_ANYWHERE: u64 = 1 << 3;
}

/// Magic numbers of formats that people often pass by mistake, recognised for the error text.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// EFI zboot (`vmlinuz.efi`): a PE/COFF "MZ" stub followed by "zimg" at offset 4.
const ZBOOT_MAGIC: [u8; 8] = *b"MZ\0\0zimg";

/// The kernel page size from `flags` bits 2:1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 0: not specified (old kernels).
    Unspecified,
    Size4K,
    Size16K,
    Size64K,
}

impl PageSize {
    fn from_flags(flags: u64) -> Self {
        match (flags & flags::PAGE_SIZE_MASK) >> flags::PAGE_SIZE_SHIFT {
            0 => PageSize::Unspecified,
            1 => PageSize::Size4K,
            2 => PageSize::Size16K,
            _ => PageSize::Size64K,
        }
    }

    /// The page size in bytes, if specified.
    pub fn bytes(self) -> Option<u64> {
        match self {
            PageSize::Unspecified => None,
            PageSize::Size4K => Some(4 << 10),
            PageSize::Size16K => Some(16 << 10),
            PageSize::Size64K => Some(64 << 10),
        }
    }
}

/// A validated arm64 kernel Image header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset of the image from its 2 MiB aligned base (0x80000 for legacy images).
    pub text_offset: u64,
    /// Bytes from the image start the kernel uses (file plus BSS). For legacy images
    /// (`size_known == false`) the file length, a lower bound.
    pub image_size: u64,
    /// The raw `flags` field (0 for legacy images).
    pub flags: u64,
    /// The kernel page size from `flags`.
    pub page_size: PageSize,
    /// False for pre-v3.17 images whose header has `image_size == 0`.
    pub size_known: bool,
}

/// Why a blob is not a bootable arm64 Image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than a header.
    TooShort { len: usize },
    /// The blob is gzip-compressed (an `Image.gz`).
    Gzip,
    /// The blob is an EFI zboot compressed kernel (`vmlinuz.efi`).
    EfiZboot,
    /// No "ARM\x64" magic at 0x38.
    BadMagic { found: u32 },
    /// Flags bit 0 says big-endian.
    BigEndian,
    /// `text_offset` not 4 KiB aligned or not below [`MAX_TEXT_OFFSET`].
    BadTextOffset { text_offset: u64 },
    /// The header's `image_size` is smaller than the file.
    SizeSmallerThanFile { image_size: u64, file_len: usize },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ImageError::TooShort { len } => {
                write!(f, "not an arm64 Image: {len} bytes is shorter than the {HEADER_SIZE}-byte header")
            }
            ImageError::Gzip => {
                write!(f, "the kernel is gzip-compressed (Image.gz); decompress it and pass the raw Image")
            }
            ImageError::EfiZboot => {
                write!(f, "the kernel is an EFI zboot compressed image (vmlinuz.efi); pass the raw Image")
            }
            ImageError::BadMagic { found } => {
                write!(f, "not an arm64 Image: magic at 0x38 is {found:#010x}, expected {MAGIC:#010x} (\"ARM\\x64\")")
            }
            ImageError::BigEndian => {
                write!(f, "the arm64 Image is a big-endian kernel; only little-endian is supported")
            }
            ImageError::BadTextOffset { text_offset } => {
                write!(f, "arm64 Image text_offset {text_offset:#x} is not a 4 KiB aligned offset below 1 GiB")
            }
            ImageError::SizeSmallerThanFile { image_size, file_len } => write!(
                f,
                "arm64 Image header says image_size is {image_size:#x} bytes, but the file is \
                 {file_len:#x} bytes (truncated header or wrong file?)"
            ),
        }
    }
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(field)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(field)
}

impl ImageHeader {
    /// Parses and validates the header of a whole Image file.
    pub fn parse(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
        if bytes.starts_with(&GZIP_MAGIC) {
            return Err(ImageError::Gzip);
        }
        if bytes.starts_with(&ZBOOT_MAGIC) {
            return Err(ImageError::EfiZboot);
        }
        if bytes.len() < HEADER_SIZE {
            return Err(ImageError::TooShort { len: bytes.len() });
        }
        let magic = read_u32(bytes, offset::MAGIC);
        if magic != MAGIC {
            return Err(ImageError::BadMagic { found: magic });
        }
        let image_size = read_u64(bytes, offset::IMAGE_SIZE);
        if image_size == 0 {
            // Pre-v3.17: text_offset and flags are not to be trusted (see the module doc).
            return Ok(ImageHeader {
                text_offset: LEGACY_TEXT_OFFSET,
                image_size: bytes.len() as u64,
                flags: 0,
                page_size: PageSize::Unspecified,
                size_known: false,
            });
        }
        let flags = read_u64(bytes, offset::FLAGS);
        if flags & flags::BIG_ENDIAN != 0 {
            return Err(ImageError::BigEndian);
        }
        let text_offset = read_u64(bytes, offset::TEXT_OFFSET);
        if !text_offset.is_multiple_of(TEXT_OFFSET_ALIGN) || text_offset >= MAX_TEXT_OFFSET {
            return Err(ImageError::BadTextOffset { text_offset });
        }
        if image_size < bytes.len() as u64 {
            return Err(ImageError::SizeSmallerThanFile { image_size, file_len: bytes.len() });
        }
        Ok(ImageHeader { text_offset, image_size, flags, page_size: PageSize::from_flags(flags), size_known: true })
    }

    /// Whether the kernel accepts a 2 MiB aligned base anywhere in RAM (flags bit 3); when
    /// false it wants the base as close as possible to the start of DRAM, which
    /// [`load_address`] does either way.
    pub fn placement_anywhere(&self) -> bool {
        self.flags & flags::PHYS_PLACEMENT_ANYWHERE != 0
    }
}

/// Where a loader places the image in RAM starting at `ram_base`: `text_offset` above the
/// first 2 MiB aligned address at or above `ram_base`, or above the next one when
/// `text_offset` is below [`BOOT_STUB_RESERVE`] (the loader's boot stub lives there).
///
/// `ram_base` is a physical address (at most 52 bits on arm64); the arithmetic saturates
/// instead of wrapping for absurd inputs near `u64::MAX`.
pub fn load_address(ram_base: u64, header: &ImageHeader) -> u64 {
    let mut base = ram_base.saturating_add(BASE_ALIGN - 1) & !(BASE_ALIGN - 1);
    if header.text_offset < BOOT_STUB_RESERVE {
        base = base.saturating_add(BASE_ALIGN);
    }
    base.saturating_add(header.text_offset)
}

/// How long the file must be according to its PE/COFF header, for an Image that has one (a
/// Linux kernel built with the EFI stub starts with "MZ" and keeps the PE header's offset at
/// 0x3c): the end of its last section's raw data. None when there is no (readable) PE header.
/// A file shorter than this is truncated: the runner refuses it rather than boot half a kernel.
pub fn pe_file_end(bytes: &[u8]) -> Option<u64> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    if bytes.get(..2)? != b"MZ" {
        return None;
    }
    let pe = u32_at(0x3c)? as usize;
    if bytes.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let sections = usize::from(u16_at(pe + 6)?);
    let table = pe + 24 + usize::from(u16_at(pe + 20)?);
    (0..sections)
        .map(|i| {
            let entry = table + 40 * i;
            Some(u64::from(u32_at(entry + 20)?) + u64::from(u32_at(entry + 16)?))
        })
        .try_fold(0, |end: u64, section| section.map(|s| end.max(s)))
}

/// Checks a flat kernel (an ELF's loadable bytes or a raw binary, `size` bytes) placed at `load`
/// and entered at `entry`: it must lie in guest RAM `[ram_base, limit)` (the device tree above)
/// and be entered inside itself. `Err(needed)`: the end address it would need, saturated.
pub fn flat_placement(ram_base: u64, limit: u64, load: u64, size: u64, entry: u64) -> Result<(u64, u64), u64> {
    match load.checked_add(size) {
        Some(end) if load >= ram_base && end <= limit && (load..end).contains(&entry) => Ok((load, size)),
        end => Err(end.unwrap_or(u64::MAX)),
    }
}

/// Where an initial RAM disk of `size` bytes goes in guest RAM that starts at `ram_base` and is
/// `ram_size` long, above the kernel (which ends at `kernel_end`) and below `limit` (the device
/// tree): where QEMU puts it (half of RAM, at most 128 MiB, above its start), or just above the
/// kernel if that is higher, 2 MiB aligned. `Err(needed)`: the end address it would need.
pub fn initrd_placement(ram_base: u64, ram_size: u64, kernel_end: u64, limit: u64, size: u64) -> Result<u64, u64> {
    const ALIGN: u64 = 2 << 20;
    let qemu = ram_base.saturating_add((ram_size / 2).min(128 << 20));
    let above_kernel = kernel_end.saturating_add(ALIGN - 1) & !(ALIGN - 1);
    let start = qemu.max(above_kernel);
    match start.checked_add(size) {
        Some(end) if end <= limit => Ok(start),
        end => Err(end.unwrap_or(u64::MAX)),
    }
}

/// Where the kernel of `file_len` bytes with `header` goes in guest RAM that starts at
/// `ram_base`, when everything from `limit` up is taken (the device tree): `Ok((load address,
/// footprint))`, the footprint being the larger of `image_size` and the file; or `Err(needed)`,
/// the end address it would need, saturated at `u64::MAX` when the header's `image_size` is so
/// large that the end does not exist (the header is the guest's input and may say anything).
pub fn placement(ram_base: u64, limit: u64, header: &ImageHeader, file_len: u64) -> Result<(u64, u64), u64> {
    let load = load_address(ram_base, header);
    let footprint = header.image_size.max(file_len);
    match load.checked_add(footprint) {
        Some(end) if end <= limit => Ok((load, footprint)),
        end => Err(end.unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    /// A synthetic Image of `file_len` bytes with the given header fields.
    fn image(text_offset: u64, image_size: u64, flags: u64, file_len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; file_len.max(HEADER_SIZE)];
        bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
        bytes.truncate(file_len);
        bytes
    }

    const PAGE_4K_FLAG: u64 = 1 << flags::PAGE_SIZE_SHIFT;

    #[test]
    fn modern_kernel() {
        let h = ImageHeader::parse(&image(0, 0x20_0000, PAGE_4K_FLAG | 8, 0x1000)).unwrap();
        assert_eq!(h.text_offset, 0);
        assert_eq!(h.image_size, 0x20_0000);
        assert_eq!(h.page_size, PageSize::Size4K);
        assert_eq!(h.page_size.bytes(), Some(4096));
        assert!(h.size_known);
        assert!(h.placement_anywhere());
    }

    #[test]
    fn page_sizes() {
        for (field, size) in
            [(0, PageSize::Unspecified), (1, PageSize::Size4K), (2, PageSize::Size16K), (3, PageSize::Size64K)]
        {
            let h = ImageHeader::parse(&image(0, 0x1000, field << 1, 64)).unwrap();
            assert_eq!(h.page_size, size);
        }
        assert_eq!(PageSize::Size64K.bytes(), Some(0x10000));
        assert_eq!(PageSize::Unspecified.bytes(), None);
    }

    #[test]
    fn legacy_kernel_has_unknown_size() {
        // text_offset field garbage (e.g. big-endian 0x80000) is ignored.
        let h = ImageHeader::parse(&image(0x0000_0800_0000_0000, 0, 0, 0x3000)).unwrap();
        assert_eq!(h.text_offset, LEGACY_TEXT_OFFSET);
        assert_eq!(h.image_size, 0x3000);
        assert!(!h.size_known);
        assert!(!h.placement_anywhere());
    }

    #[test]
    fn too_short() {
        let err = ImageHeader::parse(&image(0, 0x1000, 0, 63)).unwrap_err();
        assert_eq!(err, ImageError::TooShort { len: 63 });
        assert!(err.to_string().contains("63 bytes"));
        assert_eq!(ImageHeader::parse(&[]), Err(ImageError::TooShort { len: 0 }));
    }

    #[test]
    fn bad_magic() {
        let mut bytes = image(0, 0x1000, 0, 64);
        bytes[0x38..0x3c].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        let err = ImageHeader::parse(&bytes).unwrap_err();
        assert_eq!(err, ImageError::BadMagic { found: 0x1234_5678 });
        let text = err.to_string();
        assert!(text.contains("magic at 0x38 is 0x12345678"), "{text}");
        assert!(text.contains("ARM\\x64"), "{text}");
    }

    #[test]
    fn compressed_kernels_are_recognised() {
        let gz = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0];
        let err = ImageHeader::parse(&gz).unwrap_err();
        assert_eq!(err, ImageError::Gzip);
        assert!(err.to_string().contains("gzip-compressed"));
        let mut zboot = vec![0u8; 128];
        zboot[..8].copy_from_slice(b"MZ\0\0zimg");
        assert_eq!(ImageHeader::parse(&zboot), Err(ImageError::EfiZboot));
    }

    #[test]
    fn big_endian_rejected() {
        let err = ImageHeader::parse(&image(0, 0x1000, flags::BIG_ENDIAN, 64)).unwrap_err();
        assert_eq!(err, ImageError::BigEndian);
        assert!(err.to_string().contains("big-endian"));
    }

    #[test]
    fn text_offset_checks() {
        for bad in [0x800, 0x8_0001, MAX_TEXT_OFFSET, !0xfff] {
            let err = ImageHeader::parse(&image(bad, 0x1000, 0, 64)).unwrap_err();
            assert_eq!(err, ImageError::BadTextOffset { text_offset: bad });
        }
        assert!(ImageHeader::parse(&image(BASE_ALIGN - 0x1000, 0x1000, 0, 64)).is_ok());
        // The asyncpf guest's own choice: one 2 MiB base above the start of RAM.
        assert!(ImageHeader::parse(&image(BASE_ALIGN, 0x1000, 0, 64)).is_ok());
        assert!(ImageHeader::parse(&image(MAX_TEXT_OFFSET - 0x1000, 0x1000, 0, 64)).is_ok());
    }

    #[test]
    fn image_size_must_cover_file() {
        let err = ImageHeader::parse(&image(0, 0x100, 0, 0x101)).unwrap_err();
        assert_eq!(err, ImageError::SizeSmallerThanFile { image_size: 0x100, file_len: 0x101 });
        assert!(err.to_string().contains("0x101"));
        assert!(ImageHeader::parse(&image(0, 0x101, 0, 0x101)).is_ok());
    }

    #[test]
    fn load_address_follows_qemu() {
        let at = |ram_base, text_offset| {
            let h = ImageHeader::parse(&image(text_offset, 0x1000, 0, 64)).unwrap();
            load_address(ram_base, &h)
        };
        // text_offset 0: the first 2 MiB hold the boot stub.
        assert_eq!(at(0x4000_0000, 0), 0x4020_0000);
        // Classic 0x80000 is above the stub.
        assert_eq!(at(0x4000_0000, 0x8_0000), 0x4008_0000);
        // 0x1000 is exactly the stub size: no bump.
        assert_eq!(at(0x4000_0000, 0x1000), 0x4000_1000);
        // An unaligned RAM base is rounded up to 2 MiB first.
        assert_eq!(at(0x4000_1000, 0x8_0000), 0x4028_0000);
        assert_eq!(at(0x4000_1000, 0), 0x4040_0000);
        // Absurd inputs saturate rather than wrap.
        assert_eq!(at(u64::MAX - 5, 0), u64::MAX);
    }

    #[test]
    fn placement_checks_the_end_without_wrapping() {
        let ram = 0x4000_0000;
        let limit = ram + (64 << 20) - (2 << 20);
        let h = ImageHeader::parse(&image(0x20_0000, 0x10_0000, 0b10, 4096)).unwrap();
        assert_eq!(placement(ram, limit, &h, 4096), Ok((0x4020_0000, 0x10_0000)));
        // A file longer than image_size (pre-v3.17 headers) counts with its length.
        assert_eq!(placement(ram, limit, &h, 0x20_0000), Ok((0x4020_0000, 0x20_0000)));
        assert_eq!(placement(ram, 0x4030_0000, &h, 4096), Ok((0x4020_0000, 0x10_0000)), "ends at the limit");
        assert_eq!(placement(ram, 0x402f_ffff, &h, 4096), Err(0x4030_0000));
        // image_size near u64::MAX: load + size wraps to a small number, which must not pass.
        for huge in [u64::MAX, u64::MAX - 0x4020_0000 + 1, 1 << 63] {
            let h = ImageHeader::parse(&image(0x20_0000, huge, 0b10, 4096)).unwrap();
            let got = placement(ram, limit, &h, 4096);
            assert!(got.is_err(), "{huge:#x}: {got:?}");
        }
    }

    /// A minimal PE header at 0x40 with two sections, the last ending at 0x3000.
    fn pe_image(len: usize) -> Vec<u8> {
        let mut bytes = image(0, 0x4000, 0b10, len.max(0x200));
        bytes[..2].copy_from_slice(b"MZ");
        bytes[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        bytes[0x40..0x44].copy_from_slice(b"PE\0\0");
        bytes[0x46..0x48].copy_from_slice(&2u16.to_le_bytes()); // NumberOfSections
        bytes[0x54..0x56].copy_from_slice(&0x10u16.to_le_bytes()); // SizeOfOptionalHeader
        let table = 0x40 + 24 + 0x10;
        for (i, (raw, size)) in [(0x1000u32, 0x1000u32), (0x2000, 0x1000)].iter().enumerate() {
            let e = table + 40 * i;
            bytes[e + 16..e + 20].copy_from_slice(&size.to_le_bytes());
            bytes[e + 20..e + 24].copy_from_slice(&raw.to_le_bytes());
        }
        bytes.truncate(len);
        bytes
    }

    #[test]
    fn pe_header_gives_the_file_length() {
        assert_eq!(pe_file_end(&pe_image(0x3000)), Some(0x3000));
        assert_eq!(pe_file_end(&pe_image(0x1800)), Some(0x3000), "a truncated file still says how long it was");
        assert_eq!(pe_file_end(&image(0, 0x4000, 0b10, 0x1000)), None, "no MZ: no PE header");
        let mut bad = pe_image(0x3000);
        bad[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(pe_file_end(&bad), None, "a PE offset past the end");
        assert_eq!(pe_file_end(&pe_image(0x90)), None, "the section table is cut off");
    }

    #[test]
    fn initrd_goes_where_qemu_puts_it_and_never_over_the_kernel() {
        let ram = 0x4000_0000;
        let mib = 1 << 20;
        // 512 MiB of RAM: 128 MiB up, as QEMU does.
        assert_eq!(initrd_placement(ram, 512 * mib, ram + 30 * mib, ram + 510 * mib, 4 * mib), Ok(ram + 128 * mib));
        // 64 MiB: half of RAM.
        assert_eq!(initrd_placement(ram, 64 * mib, ram + 3 * mib, ram + 62 * mib, mib), Ok(ram + 32 * mib));
        // A kernel reaching past that point: just above it, 2 MiB aligned.
        assert_eq!(initrd_placement(ram, 64 * mib, ram + 40 * mib + 1, ram + 62 * mib, mib), Ok(ram + 42 * mib));
        // Does not fit below the device tree: the end it would need.
        assert_eq!(initrd_placement(ram, 64 * mib, ram + 3 * mib, ram + 62 * mib, 31 * mib), Err(ram + 63 * mib));
        assert_eq!(initrd_placement(ram, 64 * mib, ram, ram + 62 * mib, u64::MAX), Err(u64::MAX));
    }

    #[test]
    fn flat_kernels_lie_in_ram_and_start_inside_themselves() {
        let (ram, limit) = (0x4000_0000, 0x4000_0000 + (62 << 20));
        assert_eq!(flat_placement(ram, limit, 0x4008_0000, 0x1000, 0x4008_0000), Ok((0x4008_0000, 0x1000)));
        assert_eq!(flat_placement(ram, limit, 0x4008_0000, 0x1000, 0x4008_0ffc), Ok((0x4008_0000, 0x1000)));
        assert!(flat_placement(ram, limit, 0x4008_0000, 0x1000, 0x4008_1000).is_err(), "entry past the end");
        assert!(flat_placement(ram, limit, 0x3fff_f000, 0x2000, 0x4000_0000).is_err(), "starts below RAM");
        assert_eq!(flat_placement(ram, limit, limit - 0x800, 0x1000, limit - 0x800), Err(limit + 0x800));
        assert_eq!(flat_placement(ram, limit, u64::MAX - 1, 4, u64::MAX - 1), Err(u64::MAX), "wraps");
    }
}
