//! arm64 kernel `Image` files: making one from the guest ELF, and checking one before a run.
//!
//! The header check is `asyncpf_core::image` (Linux booting.rst: 64-byte header, magic
//! `ARM\x64` at 0x38), the very parser the hypervisor uses; the runner runs it first so that a
//! bad file is reported on the host, before QEMU starts, and adds the 64 MiB staging limit.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// The staging area for the guest Image in the hypervisor's memory layout is 64 MiB.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;
/// Offset of the header magic (`ARM\x64`).
#[cfg(test)]
const MAGIC_OFFSET: usize = 0x38;
/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub use asyncpf_core::image::ImageHeader;

/// Checks the arm64 Image header of `bytes` (the whole, uncompressed Image) with the
/// hypervisor's own parser (`asyncpf_core::image`), plus the runner's staging limits.
pub fn check_header(bytes: &[u8]) -> Result<ImageHeader> {
    let header = ImageHeader::parse(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let len = bytes.len() as u64;
    if len > MAX_IMAGE_BYTES {
        bail!("the Image is {len} bytes; the staging area holds at most {MAX_IMAGE_BYTES} bytes (64 MiB)");
    }
    if header.image_size > 1 << 32 {
        bail!("Image image_size {:#x} is not sane (over 4 GiB)", header.image_size);
    }
    if let Some(end) = asyncpf_core::image::pe_file_end(bytes).filter(|&end| end > len) {
        bail!("the Image is truncated: {len} bytes, but its PE/COFF header says {end}");
    }
    Ok(header)
}

/// What kinds of kernel file `--guest-kernel` takes (`--kernel-kind`), as QEMU's `-kernel`
/// does for arm64.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelKindArg {
    /// An arm64 `Image` (plain or gzip-compressed) or an ELF, told apart by their magic.
    #[default]
    Auto,
    Image,
    Elf,
    /// Any file: loaded at RAM + 0x80000 and entered there, as QEMU does with a raw binary.
    Raw,
}

/// Where QEMU puts a raw binary for an AArch64 CPU: RAM base + 0x80000 (KERNEL64_LOAD_ADDR).
pub const RAW_LOAD_ADDR: u64 = 0x4000_0000 + 0x8_0000;
/// The four bytes every ELF starts with.
const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// What the staged kernel is, and where the hypervisor puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagedKind {
    /// An arm64 Image: its header says where it goes.
    Image(ImageHeader),
    /// An ELF's loadable bytes, flattened: loaded at the lowest segment's physical address,
    /// entered at `e_entry`; `footprint` includes the bss.
    Elf { load: u64, entry: u64, footprint: u64 },
    /// A raw binary, loaded and entered at [`RAW_LOAD_ADDR`].
    Raw { load: u64 },
}

/// A guest kernel file after validation, ready to be handed to QEMU.
#[derive(Debug)]
pub struct StagedImage {
    /// The bytes the hypervisor loads (the original file, or a temporary one).
    pub path: PathBuf,
    pub size: u64,
    pub kind: StagedKind,
    /// Deletes the decompressed temporary file when the run is over.
    _temp: Option<TempFile>,
}

impl StagedImage {
    /// Guest RAM the kernel occupies once loaded (bss included).
    pub fn footprint(&self) -> u64 {
        match self.kind {
            StagedKind::Image(h) => h.image_size.max(self.size),
            StagedKind::Elf { footprint, .. } => footprint.max(self.size),
            StagedKind::Raw { .. } => self.size,
        }
    }

    /// `kernel_at=LOAD:ENTRY` for the hypervisor, for a kernel that is not an Image.
    pub fn kernel_at(&self) -> Option<(u64, u64)> {
        match self.kind {
            StagedKind::Image(_) => None,
            StagedKind::Elf { load, entry, .. } => Some((load, entry)),
            StagedKind::Raw { load } => Some((load, load)),
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self.kind {
            StagedKind::Image(h) => format!(
                "arm64 Image, {} bytes, text_offset {:#x}, image_size {:#x}",
                self.size, h.text_offset, h.image_size
            ),
            StagedKind::Elf { load, entry, footprint } => {
                format!("ELF, {} bytes loaded at {load:#x} ({footprint:#x} with bss), entry {entry:#x}", self.size)
            }
            StagedKind::Raw { load } => format!("raw binary, {} bytes loaded and entered at {load:#x}", self.size),
        }
    }
}

/// Reads `path` and stages it as `kind` says: an Image (decompressed if gzip, header checked),
/// an ELF (its loadable segments flattened) or a raw binary. `temp_dir` receives what had to
/// be converted.
pub fn stage_kernel(path: &Path, temp_dir: &Path, kind: KernelKindArg) -> Result<StagedImage> {
    let raw = read_limited(path, MAX_IMAGE_BYTES)
        .with_context(|| format!("cannot read the guest kernel {}", path.display()))?;
    let is_elf = raw.starts_with(&ELF_MAGIC);
    match kind {
        KernelKindArg::Elf | KernelKindArg::Auto if is_elf => {
            let (bytes, load, entry) =
                elf_flat(&raw).with_context(|| format!("{} is not a usable ELF", path.display()))?;
            let (lo, hi) = elf_load_range(&raw)?;
            let temp = TempFile::new(temp_dir, "guest-elf")?;
            fs::write(&temp.0, &bytes).with_context(|| format!("cannot write {}", temp.0.display()))?;
            let kind = StagedKind::Elf { load, entry, footprint: hi - lo.min(load) };
            Ok(StagedImage { path: temp.0.clone(), size: bytes.len() as u64, kind, _temp: Some(temp) })
        }
        KernelKindArg::Elf => bail!("{} is not an ELF file (no \\x7fELF magic)", path.display()),
        KernelKindArg::Raw => {
            if raw.is_empty() {
                bail!("{} is empty", path.display());
            }
            Ok(StagedImage {
                path: path.to_path_buf(),
                size: raw.len() as u64,
                kind: StagedKind::Raw { load: RAW_LOAD_ADDR },
                _temp: None,
            })
        }
        KernelKindArg::Auto | KernelKindArg::Image => stage(path, temp_dir).map_err(|e| {
            if kind == KernelKindArg::Auto {
                e.context(
                    "(an ELF is recognised by its magic; give --kernel-kind raw to boot any file as a raw binary)",
                )
            } else {
                e
            }
        }),
    }
}

/// The flat bytes of an ELF's loadable segments, where they go and the entry point.
fn elf_flat(elf_bytes: &[u8]) -> Result<(Vec<u8>, u64, u64)> {
    let bytes = elf_to_image(elf_bytes)?;
    let header = elf::FileHeader64::<Endianness>::parse(elf_bytes).context("not a 64-bit ELF file")?;
    let endian = header.endian().context("unsupported ELF byte order")?;
    let load = header
        .program_headers(endian, elf_bytes)?
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD && ph.p_filesz(endian) > 0)
        .map(|ph| ph.p_paddr(endian))
        .min()
        .context("no loadable segment")?;
    Ok((bytes, load, header.e_entry(endian)))
}

/// Reads `path`, decompresses it if it is gzip, and checks the Image header.
/// `temp_dir` receives the decompressed copy.
pub fn stage(path: &Path, temp_dir: &Path) -> Result<StagedImage> {
    let raw = read_limited(path, MAX_IMAGE_BYTES)
        .with_context(|| format!("cannot read the guest kernel {}", path.display()))?;
    let not_image = |e: anyhow::Error| {
        e.context(format!(
            "{} is not a valid arm64 kernel Image (build one with `cargo xtask build`, or pass a \
             Linux arm64 `Image`/`vmlinuz`)",
            path.display()
        ))
    };
    if raw.starts_with(&GZIP_MAGIC) {
        let bytes = gunzip_limited(&raw, MAX_IMAGE_BYTES)
            .with_context(|| format!("cannot decompress {} (it starts with the gzip magic)", path.display()))
            .map_err(not_image)?;
        let header = check_header(&bytes).map_err(not_image)?;
        let temp = TempFile::new(temp_dir, "guest-Image")?;
        fs::write(&temp.0, &bytes).with_context(|| format!("cannot write {}", temp.0.display()))?;
        let kind = StagedKind::Image(header);
        Ok(StagedImage { path: temp.0.clone(), size: bytes.len() as u64, kind, _temp: Some(temp) })
    } else {
        let header = check_header(&raw).map_err(not_image)?;
        Ok(StagedImage {
            path: path.to_path_buf(),
            size: raw.len() as u64,
            kind: StagedKind::Image(header),
            _temp: None,
        })
    }
}

/// Reads at most `limit + 1` bytes so that a huge file is rejected without reading it all.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        bail!("the file is larger than {limit} bytes (64 MiB), the most the runner stages");
    }
    Ok(bytes)
}

fn gunzip_limited(gz: &[u8], limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(gz).take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        bail!("the decompressed Image is larger than {limit} bytes (64 MiB)");
    }
    Ok(out)
}

/// A uniquely named file that is removed when dropped (parallel test runs each get their own).
#[derive(Debug)]
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(dir: &Path, stem: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ok(TempFile(dir.join(format!("{stem}-{}-{n}", std::process::id()))))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Flattens an ELF into a raw Image: the file bytes of every PT_LOAD segment placed at its
/// physical address relative to the lowest one, gaps zero-filled, the bss tail left out
/// (the Image header's image_size tells the loader how much to reserve beyond the file).
pub fn elf_to_image(elf_bytes: &[u8]) -> Result<Vec<u8>> {
    let header = elf::FileHeader64::<Endianness>::parse(elf_bytes).context("not a 64-bit ELF file")?;
    let endian = header.endian().context("unsupported ELF byte order")?;
    if header.e_machine(endian) != elf::EM_AARCH64 {
        bail!("the ELF is for machine {}, not AArch64 (EM_AARCH64 = {})", header.e_machine(endian), elf::EM_AARCH64);
    }
    let segments = header.program_headers(endian, elf_bytes).context("cannot read the ELF program headers")?;
    // (physical address, file bytes) of every loadable segment that has bytes in the file.
    let mut loads: Vec<(u64, &[u8])> = Vec::new();
    for ph in segments {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let data =
            ph.data(endian, elf_bytes).map_err(|_| anyhow::anyhow!("a PT_LOAD segment lies outside the ELF file"))?;
        loads.push((ph.p_paddr(endian), data));
    }
    if loads.is_empty() {
        bail!(
            "the ELF has no loadable segments with contents (no PT_LOAD with p_filesz > 0): \
             it is probably still a stub without code or a linker script"
        );
    }
    loads.sort_by_key(|&(addr, _)| addr);
    let base = loads[0].0;
    let mut end = base;
    for &(addr, data) in &loads {
        if addr < end {
            bail!("PT_LOAD segments overlap at physical address {addr:#x}");
        }
        end = addr.checked_add(data.len() as u64).context("a PT_LOAD segment wraps the address space")?;
    }
    let total = end - base;
    if total > MAX_IMAGE_BYTES {
        bail!(
            "the loadable segments span {total:#x} bytes from {base:#x}; an Image may be at most \
             64 MiB (are the segments' physical addresses far apart?)"
        );
    }
    let mut image = vec![0u8; total as usize];
    for (addr, data) in loads {
        let at = (addr - base) as usize;
        image[at..at + data.len()].copy_from_slice(data);
    }
    Ok(image)
}

/// The physical address range `[lowest, highest)` an ELF occupies once loaded, bss included
/// (for checking that the hypervisor does not overlap the Image staging area).
pub fn elf_load_range(elf_bytes: &[u8]) -> Result<(u64, u64)> {
    let header = elf::FileHeader64::<Endianness>::parse(elf_bytes).context("not a 64-bit ELF file")?;
    let endian = header.endian().context("unsupported ELF byte order")?;
    let mut range: Option<(u64, u64)> = None;
    for ph in header.program_headers(endian, elf_bytes).context("cannot read the ELF program headers")? {
        if ph.p_type(endian) != elf::PT_LOAD || ph.p_memsz(endian) == 0 {
            continue;
        }
        let lo = ph.p_paddr(endian);
        let hi = lo.saturating_add(ph.p_memsz(endian));
        range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
    range.context("the ELF has no loadable segments")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid Image: a header (text_offset 0, image_size = len + bss) and some body.
    pub(crate) fn fake_image(len: usize, bss: u64) -> Vec<u8> {
        let mut img = vec![0u8; len];
        img[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +64
        img[16..24].copy_from_slice(&(len as u64 + bss).to_le_bytes());
        img[24..32].copy_from_slice(&0xau64.to_le_bytes()); // 4K pages, anywhere
        img[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(b"ARM\x64");
        img
    }

    #[test]
    fn accepts_a_good_header() {
        let h = check_header(&fake_image(4096, 8192)).unwrap();
        assert_eq!((h.text_offset, h.image_size, h.flags), (0, 4096 + 8192, 0xa));
        assert!(h.size_known);
    }

    #[test]
    fn rejects_bad_headers() {
        let msg = |b: &[u8]| check_header(b).unwrap_err().to_string();
        assert!(msg(&[0u8; 10]).contains("shorter than the 64-byte header"));
        assert!(msg(&vec![0u8; 4096]).contains("magic"));
        let mut be = fake_image(4096, 0);
        be[24] |= 1;
        assert!(msg(&be).contains("big-endian"));
        let mut off = fake_image(4096, 0);
        off[8..16].copy_from_slice(&0x200800u64.to_le_bytes()); // not 4 KiB aligned
        assert!(msg(&off).contains("text_offset"));
        let mut legacy = fake_image(4096, 0);
        legacy[16..24].copy_from_slice(&0u64.to_le_bytes());
        assert!(!check_header(&legacy).unwrap().size_known, "pre-3.17 kernels are accepted");
        let mut small = fake_image(4096, 0);
        small[16..24].copy_from_slice(&100u64.to_le_bytes());
        assert!(msg(&small).contains("but the file is"));
        let mut huge = fake_image(4096, 0);
        huge[16..24].copy_from_slice(&(8u64 << 30).to_le_bytes());
        assert!(msg(&huge).contains("not sane"));
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-test-{name}-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stages_plain_and_gzip_images_and_rejects_text() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let dir = temp_dir("stage");
        let img = fake_image(8192, 4096);

        let plain = dir.join("Image");
        fs::write(&plain, &img).unwrap();
        let staged = stage(&plain, &dir).unwrap();
        assert_eq!((staged.path.clone(), staged.size), (plain.clone(), 8192));

        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&img).unwrap();
        let gzfile = dir.join("vmlinuz");
        fs::write(&gzfile, gz.finish().unwrap()).unwrap();
        let staged = stage(&gzfile, &dir).unwrap();
        assert_eq!(staged.size, 8192);
        assert_eq!(fs::read(&staged.path).unwrap(), img);
        let temp = staged.path.clone();
        drop(staged);
        assert!(!temp.exists(), "the decompressed copy is removed after use");

        let text = dir.join("notes.txt");
        fs::write(&text, "this is not a kernel\n".repeat(10)).unwrap();
        let err = format!("{:#}", stage(&text, &dir).unwrap_err());
        assert!(err.contains("is not a valid arm64 kernel Image") && err.contains("magic"), "{err}");

        let missing = format!("{:#}", stage(&dir.join("nope"), &dir).unwrap_err());
        assert!(missing.contains("cannot read the guest kernel"), "{missing}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A hand-made little-endian ELF64 for AArch64 with the given (p_type, paddr, bytes, memsz)
    /// program headers; the segment contents follow the headers in the file.
    pub(crate) fn synthetic_elf(segments: &[(elf::ProgramType, u64, &[u8], u64)]) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let mut out = vec![0u8; EHDR + PHDR * segments.len()];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little-endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&elf::EM_AARCH64.0.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, &(p_type, paddr, data, memsz)) in segments.iter().enumerate() {
            let offset = out.len() as u64;
            out.extend_from_slice(data);
            let ph = &mut out[EHDR + i * PHDR..EHDR + (i + 1) * PHDR];
            ph[0..4].copy_from_slice(&p_type.0.to_le_bytes());
            ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&(paddr + 0xffff_0000_0000_0000).to_le_bytes()); // vaddr
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        out
    }

    #[test]
    fn elf_to_image_lays_out_segments_by_physical_address() {
        let text = [0xaau8; 16];
        let data = [0xbbu8; 8];
        // Given out of order, with a gap, a non-load segment and a bss-only segment.
        let elf = synthetic_elf(&[
            (elf::PT_LOAD, 0x4000_0020, &data, 8 + 0x1000), // data + bss tail
            (elf::PT_NOTE, 0x1000, &[1, 2, 3], 3),
            (elf::PT_LOAD, 0x4000_0000, &text, 16),
            (elf::PT_LOAD, 0x4010_0000, &[], 0x1000), // pure bss
        ]);
        let image = elf_to_image(&elf).unwrap();
        assert_eq!(image.len(), 0x28, "from the lowest address to the end of the last file bytes");
        assert_eq!(&image[..16], &text);
        assert_eq!(&image[16..32], &[0u8; 16], "the gap is zero-filled");
        assert_eq!(&image[32..40], &data);
        assert_eq!(elf_load_range(&elf).unwrap(), (0x4000_0000, 0x4010_1000));
    }

    #[test]
    fn elf_to_image_errors() {
        let none = synthetic_elf(&[(elf::PT_LOAD, 0x4000_0000, &[], 0x100)]);
        assert!(elf_to_image(&none).unwrap_err().to_string().contains("no loadable segments"));
        let overlap =
            synthetic_elf(&[(elf::PT_LOAD, 0x4000_0000, &[1; 16], 16), (elf::PT_LOAD, 0x4000_0008, &[2; 16], 16)]);
        assert!(elf_to_image(&overlap).unwrap_err().to_string().contains("overlap"));
        let far =
            synthetic_elf(&[(elf::PT_LOAD, 0x4000_0000, &[1; 16], 16), (elf::PT_LOAD, 0x8000_0000, &[2; 16], 16)]);
        assert!(elf_to_image(&far).unwrap_err().to_string().contains("64 MiB"));
        let mut x86 = synthetic_elf(&[(elf::PT_LOAD, 0, &[1; 16], 16)]);
        x86[18..20].copy_from_slice(&elf::EM_X86_64.0.to_le_bytes());
        assert!(elf_to_image(&x86).unwrap_err().to_string().contains("not AArch64"));
        assert!(elf_to_image(b"not an elf at all, just some text....................................").is_err());
    }

    #[test]
    fn converted_image_passes_the_header_check() {
        let img = fake_image(256, 0x2000);
        let elf = synthetic_elf(&[(elf::PT_LOAD, 0x4008_0000, &img, 256 + 0x2000)]);
        let out = elf_to_image(&elf).unwrap();
        assert_eq!(out, img);
        check_header(&out).unwrap();
    }
}
