//! The hypervisor's backing disk for one run: a sparse raw image file under `target/`, sized
//! from the guest RAM (or the self-test), and, when errors are injected, a QEMU `blkdebug`
//! configuration that fails reads or writes of chosen 4 KiB slots with EIO. Both files are
//! removed when the run ends.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::cli::{BackingPlan, SLOT_BYTES};

/// Disk sectors per slot (512-byte sectors).
const SECTORS_PER_SLOT: u64 = SLOT_BYTES / 512;
/// errno QEMU returns for an injected error: EIO, which virtio-blk reports as VIRTIO_BLK_S_IOERR.
const EIO: u32 = 5;
/// blkdebug events of the raw format driver's reads and writes, and the request types a rule
/// fails. The event only arms a rule; without `iotype` an armed rule fails every request that
/// touches its sector, reads and writes alike.
const READ: (&str, &str) = ("read_aio", "read");
const WRITE: (&str, &str) = ("write_aio", "write");

/// Where the disks live.
pub fn disk_dir(root: &Path) -> PathBuf {
    root.join("target").join("xtask").join("disks")
}

/// One run's disk; the files go away with it.
#[derive(Debug)]
pub struct Disk {
    pub image: PathBuf,
    pub blkdebug_config: Option<PathBuf>,
}

/// The blkdebug configuration that fails the given slots: reads of the read-error slots, writes
/// of the write-error slots (each rule names its I/O type: a rule without one, once its event
/// has fired, fails every kind of request at its sector).
pub fn blkdebug_config(plan: &BackingPlan) -> String {
    let rule = |(event, iotype): (&str, &str), slot: u64| {
        format!(
            "[inject-error]\nevent = \"{event}\"\niotype = \"{iotype}\"\nerrno = \"{EIO}\"\nsector = \"{}\"\n\
             once = \"off\"\n\n",
            slot * SECTORS_PER_SLOT
        )
    };
    let reads = plan.read_errors.iter().map(|&s| rule(READ, s));
    let writes = plan.write_errors.iter().map(|&s| rule(WRITE, s));
    reads.chain(writes).collect()
}

/// QEMU's option syntax doubles commas inside a value.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

impl Disk {
    /// Creates the sparse image (and the blkdebug configuration) for `plan`.
    #[cfg(test)]
    pub fn create(root: &Path, plan: &BackingPlan, guest_mib: u32) -> Result<Disk> {
        Self::create_with_room(root, plan, guest_mib, 0)
    }

    /// As `create`, with `extra_bytes` after guest RAM's slots (the trace area, `--trace`).
    pub fn create_with_room(root: &Path, plan: &BackingPlan, guest_mib: u32, extra_bytes: u64) -> Result<Disk> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = disk_dir(root);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let stem = format!("backing-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let image = dir.join(format!("{stem}.img"));
        let file = File::create(&image).with_context(|| format!("cannot create {}", image.display()))?;
        file.set_len(plan.disk_bytes(guest_mib).max((u64::from(guest_mib) << 20) + extra_bytes))
            .with_context(|| format!("cannot size {}", image.display()))?;
        let mut disk = Disk { image, blkdebug_config: None };
        if plan.injects_errors() {
            let config = dir.join(format!("{stem}.blkdebug"));
            fs::write(&config, blkdebug_config(plan)).with_context(|| format!("cannot write {}", config.display()))?;
            disk.blkdebug_config = Some(config);
        }
        Ok(disk)
    }

    /// The `-drive file=` value: the image, or `blkdebug:CONFIG:IMAGE`.
    pub fn drive_file(&self) -> String {
        match &self.blkdebug_config {
            None => qemu_escape(&self.image),
            Some(config) => format!("blkdebug:{}:{}", qemu_escape(config), qemu_escape(&self.image)),
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.image);
        if let Some(config) = &self.blkdebug_config {
            let _ = fs::remove_file(config);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkdebug_rules_name_sectors() {
        let plan = BackingPlan { read_errors: vec![5], write_errors: vec![9], ..Default::default() };
        let text = blkdebug_config(&plan);
        assert_eq!(
            text,
            "[inject-error]\nevent = \"read_aio\"\niotype = \"read\"\nerrno = \"5\"\nsector = \"40\"\nonce = \"off\"\n\n\
             [inject-error]\nevent = \"write_aio\"\niotype = \"write\"\nerrno = \"5\"\nsector = \"72\"\nonce = \"off\"\n\n"
        );
    }

    #[test]
    fn creates_sparse_disk_and_removes_it() {
        let root = std::env::temp_dir().join(format!("asyncpf-disk-test-{}", std::process::id()));
        let plan = BackingPlan { read_errors: vec![1], ..Default::default() };
        let disk = Disk::create(&root, &plan, 16).unwrap();
        assert_eq!(fs::metadata(&disk.image).unwrap().len(), 16 << 20);
        let config = disk.blkdebug_config.clone().unwrap();
        assert!(disk.drive_file().starts_with("blkdebug:") && disk.drive_file().ends_with(".img"));
        let image = disk.image.clone();
        drop(disk);
        assert!(!image.exists() && !config.exists());
        let _ = fs::remove_dir_all(&root);
        assert_eq!(qemu_escape(Path::new("/a,b")), "/a,,b");
    }
}
