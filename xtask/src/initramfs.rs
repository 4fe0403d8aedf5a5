//! A minimal writer of initramfs archives: cpio in the "newc" format (Linux's
//! Documentation/driver-api/early-userspace/buffer-format.rst), gzip-compressed.

use std::io::Write;

use anyhow::Result;
use flate2::write::GzEncoder;
use flate2::Compression;

/// One file of the archive.
pub struct Entry<'a> {
    pub path: &'a str,
    /// `S_IFREG | 0o755` and the like.
    pub mode: u32,
    pub data: &'a [u8],
}

/// Regular file and directory mode bits.
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, name: &str) {
    let fields = [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// The uncompressed newc archive of `entries`, ending with the trailer.
pub fn cpio_newc(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let nlink = if e.mode & S_IFDIR != 0 { 2 } else { 1 };
        header(&mut out, i as u32 + 1, e.mode, nlink, e.data.len(), e.path);
        out.extend_from_slice(e.data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, "TRAILER!!!");
    out
}

/// [`cpio_newc`], gzip-compressed (what Linux's `RD_GZIP` unpacks).
pub fn gzip_cpio(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&cpio_newc(entries))?;
    Ok(gz.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let archive = cpio_newc(&[Entry { path: "hello", mode: S_IFREG | 0o644, data: b"hi\n" }]);
        // Header (110 bytes) + "hello\0" = 116 (aligned), data 3 -> 4; then the trailer.
        assert_eq!(&archive[..6], b"070701");
        assert_eq!(&archive[6..14], b"00000001", "inode");
        assert_eq!(&archive[14..22], b"000081a4", "mode");
        assert_eq!(&archive[54..62], b"00000003", "file size");
        assert_eq!(&archive[94..102], b"00000006", "name size with its NUL");
        assert_eq!(&archive[110..116], b"hello\0");
        assert_eq!(&archive[116..119], b"hi\n");
        assert_eq!(&archive[120..126], b"070701");
        assert_eq!(&archive[230..241], b"TRAILER!!!\0");
        assert_eq!(archive.len() % 4, 0);
        let gz = gzip_cpio(&[]).unwrap();
        assert_eq!(&gz[..2], [0x1f, 0x8b]);
    }
}
