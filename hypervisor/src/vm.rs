//! The virtual machine: guest RAM behind stage-2 translation, the vCPUs' shared state, the
//! emulated devices, and how the VM is built from the hypervisor's options.

use alloc::vec::Vec;

use crate::sync::Mutex;
use asyncpf_core::fdt::GuestPlatform;
use asyncpf_core::hypercall::Machine;
use asyncpf_core::image::{self, ImageHeader};
use asyncpf_core::latency::TimeBase;
use asyncpf_core::lockorder::Level;
use asyncpf_core::options::HypOptions;
use spin::Once;

use crate::mm::{Ipa, PhysAddr, Stage2, PAGE_SIZE};
use crate::platform::Platform;
use crate::vcpus::{PowerState, Vcpus};
use crate::vgic::VirtualGic;
use crate::vuart::{VirtualUart, UART_PAGE_BYTES};
use crate::{arch, pager};

/// Where guest RAM starts in the guest's physical address space (as on QEMU's `virt`).
pub const GUEST_RAM_IPA: u64 = 0x4000_0000;
/// Guest-visible device addresses: the same as the physical `virt` machine's.
pub const GUEST_GICD_IPA: u64 = 0x0800_0000;
pub const GUEST_GICD_BYTES: u64 = 0x1_0000;
pub const GUEST_GICR_IPA: u64 = 0x080A_0000;
pub const GUEST_GICR_FRAME_BYTES: u64 = 0x2_0000;
pub const GUEST_UART_IPA: u64 = 0x0900_0000;
/// The guest UART's interrupt (SPI 1), described in the device tree only: the emulated UART
/// never raises it.
pub const GUEST_UART_SPI: u32 = 1;
/// SPIs the emulated distributor implements (INTIDs 32..96).
pub const GUEST_SPIS: u32 = 64;

const MIB: u64 = 1 << 20;

/// The VM.
pub struct Vm {
    pub vcpus: Vcpus,
    pub ram_base: Ipa,
    pub ram_bytes: u64,
    /// Host frames backing guest RAM (contiguous): one per guest page, or the pager's
    /// `resident_mib` of frames.
    pub ram_host: PhysAddr,
    pub ram_host_bytes: u64,
    pub stage2: Stage2,
    /// The guest's interrupt controller.
    pub vgic: VirtualGic,
    pub uart: Mutex<VirtualUart>,
    pub kernel_entry: u64,
    pub dtb_address: u64,
    /// The guest's SDEI dispatcher.
    pub sdei: crate::sdei::Dispatcher,
    /// Asynchronous page faults: only when guest RAM is paged.
    pub apf: Option<crate::apf::Apf>,
}

static VM: Once<Vm> = Once::new();

/// The VM, once CPU 0 has built it.
pub fn get() -> &'static Vm {
    VM.get().expect("the VM is built before any vCPU runs")
}

/// The VM, once CPU 0 has built it.
pub fn try_get() -> Option<&'static Vm> {
    VM.get()
}

impl Vm {
    /// What asynchronous page faults signal through.
    pub fn signals(&self) -> crate::apf::Signals<'_> {
        crate::apf::Signals { vcpus: &self.vcpus, vgic: &self.vgic, sdei: &self.sdei }
    }

    /// Whether `[ipa, ipa + len)` lies inside guest RAM.
    pub fn is_guest_ram(&self, ipa: u64, len: u64) -> bool {
        ipa >= self.ram_base.0 && ipa.checked_add(len).is_some_and(|end| end <= self.ram_base.0 + self.ram_bytes)
    }
}

/// The VM as the hypercall decision table (`asyncpf_core::hypercall`) sees it.
impl Machine for Vm {
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
        self.vcpus.by_mpidr(mpidr)
    }
    fn power_state(&self, vcpu: usize) -> PowerState {
        self.vcpus[vcpu].power()
    }
    fn is_guest_ram(&self, address: u64, len: u64) -> bool {
        Vm::is_guest_ram(self, address, len)
    }
    fn request_power_on(&self, vcpu: usize, entry: u64, context: u64) -> Result<(), PowerState> {
        self.vcpus.power_on(vcpu, entry, context)
    }
}

/// Why the VM could not be built.
#[derive(Debug)]
pub enum BuildError {
    TooManyVcpus {
        requested: usize,
        physical: usize,
    },
    NoImage,
    ImageOutsideRam,
    InitrdOutsideRam,
    /// The initial RAM disk does not fit between the kernel and the device tree.
    InitrdTooLarge {
        needed_end: u64,
        guest_bytes: u64,
    },
    BadImage(image::ImageError),
    ImageTooLarge {
        needed: u64,
        guest_bytes: u64,
    },
    NotEnoughRam {
        needed_end: u64,
        ram_end: u64,
    },
    DeviceTree(asyncpf_core::fdt::FdtError),
    Pager(pager::PagerError),
    /// `resident_mib` has too few frames for the kernel and the device tree.
    ResidentTooSmall {
        resident_mib: u64,
    },
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooManyVcpus { requested, physical } => write!(
                f,
                "{requested} vCPUs requested but the machine has {physical} physical CPUs (one vCPU is pinned per CPU)"
            ),
            Self::NoImage => write!(f, "no guest kernel: pass image=ADDR:SIZE on the hypervisor command line"),
            Self::ImageOutsideRam => write!(f, "the staged guest image lies outside RAM or overlaps the hypervisor"),
            Self::InitrdOutsideRam => {
                write!(f, "the staged initrd lies outside RAM, or overlaps the hypervisor or the guest image")
            }
            Self::InitrdTooLarge { needed_end, guest_bytes } => write!(
                f,
                "the initrd does not fit into {guest_bytes:#x} bytes of guest RAM between the kernel and the device \
                 tree (it would end at IPA {needed_end:#x})"
            ),
            Self::BadImage(e) => write!(f, "the guest kernel is not a valid arm64 Image: {e}"),
            Self::ImageTooLarge { needed, guest_bytes } => {
                write!(f, "the guest kernel needs {needed:#x} bytes of guest RAM but the guest has {guest_bytes:#x}")
            }
            Self::DeviceTree(e) => write!(f, "cannot write the guest device tree: {e}"),
            Self::Pager(e) => write!(f, "cannot page guest RAM: {e}"),
            Self::ResidentTooSmall { resident_mib } => write!(
                f,
                "resident_mib={resident_mib} cannot even hold the guest kernel, its initrd and its device tree; raise it"
            ),
            Self::NotEnoughRam { needed_end, ram_end } => write!(
                f,
                "not enough host RAM for the guest: need up to {needed_end:#x}, RAM ends at {ram_end:#x} (raise QEMU -m)"
            ),
        }
    }
}

/// Build the VM described by `options` on `platform`; `free_start` is the first host address
/// the hypervisor does not use. Runs once, on CPU 0.
pub fn build(platform: &Platform, options: &HypOptions, free_start: u64) -> Result<&'static Vm, BuildError> {
    let physical = platform.cpu_mpidrs.len();
    let vcpu_count = options.vcpus.unwrap_or(physical);
    if vcpu_count > physical {
        return Err(BuildError::TooManyVcpus { requested: vcpu_count, physical });
    }
    let staged = options.image.ok_or(BuildError::NoImage)?;
    let ram_end = platform.ram_base + platform.ram_size;
    if staged.addr < free_start || staged.addr.checked_add(staged.size).is_none_or(|end| end > ram_end) {
        return Err(BuildError::ImageOutsideRam);
    }
    // SAFETY: the runner loaded the image there (QEMU's loader device) and the range was just
    // checked to lie in RAM beyond the hypervisor; nothing else writes it.
    let image_bytes = unsafe { core::slice::from_raw_parts(staged.addr as *const u8, staged.size as usize) };
    // An arm64 Image has its header; a flat kernel (ELF or raw binary) comes with kernel_at.
    let header = match options.kernel_at {
        Some(_) => None,
        None => Some(ImageHeader::parse(image_bytes).map_err(BuildError::BadImage)?),
    };
    let mut staged_end = staged.addr + staged.size;
    let initrd_bytes: &[u8] = match options.initrd {
        Some(initrd) => {
            let end = initrd.addr.checked_add(initrd.size).filter(|&end| end <= ram_end);
            if initrd.addr < staged_end || end.is_none() {
                return Err(BuildError::InitrdOutsideRam);
            }
            staged_end = staged_end.max(end.unwrap_or(0));
            // SAFETY: the runner loaded the initrd there; the range was just checked to lie in
            // RAM above the hypervisor and the image, and nothing else writes it.
            unsafe { core::slice::from_raw_parts(initrd.addr as *const u8, initrd.size as usize) }
        }
        None => &[],
    };

    let guest_bytes = options.guest_ram_bytes();
    // With a pager, only `resident_mib` of host frames back guest RAM.
    let host_bytes = options.resident_mib.map_or(guest_bytes, |mib| (mib * MIB).min(guest_bytes));
    let ram_host = align_up(staged_end, 2 * MIB);
    if ram_host + host_bytes > ram_end {
        return Err(BuildError::NotEnoughRam { needed_end: ram_host + host_bytes, ram_end });
    }
    // The device tree goes into the last 2 MiB of guest RAM, where no kernel is placed.
    let dtb_address = GUEST_RAM_IPA + guest_bytes - 2 * MIB;
    let too_large = |end: u64| BuildError::ImageTooLarge {
        needed: end.saturating_sub(GUEST_RAM_IPA).saturating_add(2 * MIB),
        guest_bytes,
    };
    let (load, footprint, entry) = match (&header, options.kernel_at) {
        (Some(header), _) => {
            let (load, footprint) =
                image::placement(GUEST_RAM_IPA, dtb_address, header, staged.size).map_err(too_large)?;
            (load, footprint, load)
        }
        (None, Some((load, entry))) => {
            let (load, footprint) =
                image::flat_placement(GUEST_RAM_IPA, dtb_address, load, staged.size, entry).map_err(too_large)?;
            (load, footprint, entry)
        }
        (None, None) => unreachable!("no header only with kernel_at"),
    };
    let initrd_size = initrd_bytes.len() as u64;
    let initrd_at = match initrd_size {
        0 => None,
        size => Some(
            image::initrd_placement(GUEST_RAM_IPA, guest_bytes, load + footprint, dtb_address, size)
                .map_err(|needed_end| BuildError::InitrdTooLarge { needed_end, guest_bytes })?,
        ),
    };

    let mut stage2 = Stage2::new();
    if let Some(resident_mib) = options.resident_mib {
        let pages = stage2.prepare_pages(Ipa(GUEST_RAM_IPA), guest_bytes);
        let setup = pager::PagerSetup {
            guest_mib: options.guest_mib,
            resident_mib,
            latency_us: options.backing_latency_us,
            time_base: if options.icount { TimeBase::Virtual } else { TimeBase::Host },
            vcpus: vcpu_count,
            pages,
            frames: PhysAddr(ram_host),
        };
        pager::start(platform, setup).map_err(BuildError::Pager)?;
    } else {
        stage2.map_normal(Ipa(GUEST_RAM_IPA), PhysAddr(ram_host), guest_bytes);
    }

    let vcpus = Vcpus::new(&platform.cpu_mpidrs[..vcpu_count]);
    let mpidrs: Vec<u64> = vcpus.iter().map(|v| v.mpidr).collect();

    let vm = VM.call_once(|| Vm {
        vcpus,
        ram_base: Ipa(GUEST_RAM_IPA),
        ram_bytes: guest_bytes,
        ram_host: PhysAddr(ram_host),
        ram_host_bytes: host_bytes,
        stage2,
        vgic: VirtualGic::new(GUEST_SPIS, vcpu_count),
        uart: Mutex::new(Level::Uart, VirtualUart::new()),
        kernel_entry: entry,
        dtb_address,
        sdei: crate::sdei::Dispatcher::new(vcpu_count),
        apf: pager::get().map(|_| {
            let granule = crate::max_writeback_granule() as u64;
            let resident_pages = host_bytes / PAGE_SIZE;
            crate::apf::Apf::new(vcpu_count, granule, GUEST_RAM_IPA..GUEST_RAM_IPA + guest_bytes, resident_pages)
        }),
    });

    if let (Some(pager), Some(_)) = (pager::get(), &vm.apf) {
        pager.on_async_completion(|pager, waiter| {
            let vm = get();
            if let Some(apf) = &vm.apf {
                apf.completed(vm.signals(), pager, waiter);
            }
        });
    }

    // Load the kernel (zeroing the rest of its footprint) and the device tree.
    vm.load(load, image_bytes, footprint)?;
    if let Some(at) = initrd_at {
        vm.load(at, initrd_bytes, initrd_size)?;
    }
    let platform_dt = GuestPlatform {
        ram_base: GUEST_RAM_IPA,
        ram_size: guest_bytes,
        cpu_mpidrs: &mpidrs,
        gicd_base: GUEST_GICD_IPA,
        gicr_base: GUEST_GICR_IPA,
        uart_base: GUEST_UART_IPA,
        uart_spi: GUEST_UART_SPI,
        bootargs: options.guest_cmdline,
        initrd: initrd_at.map(|at| (at, at + initrd_size)),
        // Every CPU of the machine is the same model: CPU 0's PMU stands for all.
        pmu: crate::pmu::offered(),
    };
    let dtb = platform_dt.build_fdt().map_err(BuildError::DeviceTree)?;
    assert!(dtb.len() as u64 <= 2 * MIB, "the guest device tree outgrew its 2 MiB slot");
    vm.load(dtb_address, &dtb, dtb.len() as u64)?;
    // The guest starts with its MMU and caches off: make what we wrote visible to it.
    arch::invalidate_icache();
    Ok(vm)
}

impl Vm {
    /// Before the VM runs: copy `bytes` into guest RAM at `ipa` and zero the rest of
    /// `[ipa, ipa + footprint)` (checked to be guest RAM), cleaned to the point of coherency.
    /// Paged RAM gets resident, dirty pages from the pager.
    fn load(&self, ipa: u64, bytes: &[u8], footprint: u64) -> Result<(), BuildError> {
        if !self.is_guest_ram(ipa, footprint) || bytes.len() as u64 > footprint {
            return Err(BuildError::ImageTooLarge { needed: footprint, guest_bytes: self.ram_bytes });
        }
        let mut offset = 0;
        while offset < footprint {
            let at = ipa + offset;
            let page = ((at - self.ram_base.0) / PAGE_SIZE) as usize;
            let within = at % PAGE_SIZE;
            let chunk = (PAGE_SIZE - within).min(footprint - offset);
            let frame = match pager::get() {
                Some(pager) => pager
                    .preload(page)
                    .ok_or(BuildError::ResidentTooSmall { resident_mib: self.ram_host_bytes / MIB })?,
                None => PhysAddr(self.ram_host.0 + page as u64 * PAGE_SIZE),
            };
            let host = (frame.0 + within) as usize;
            let copied = (bytes.len() as u64).saturating_sub(offset).min(chunk) as usize;
            // SAFETY: `host` lies in the host frame that backs this guest page (`chunk` stays
            // within the page); the frame belongs to the VM alone, and no vCPU runs yet.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes.as_ptr().add((offset as usize).min(bytes.len())),
                    host as *mut u8,
                    copied,
                );
                core::ptr::write_bytes((host + copied) as *mut u8, 0, chunk as usize - copied);
            }
            arch::clean_dcache_to_poc(host, chunk as usize);
            offset += chunk;
        }
        Ok(())
    }
}

const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

/// The emulated device at `ipa`, if any.
pub enum Device {
    Distributor { offset: u64 },
    Redistributor { vcpu: usize, offset: u64 },
    Uart { offset: u64 },
}

impl Vm {
    pub fn device_at(&self, ipa: u64) -> Option<Device> {
        let gicr_bytes = GUEST_GICR_FRAME_BYTES * self.vcpus.len() as u64;
        if (GUEST_GICD_IPA..GUEST_GICD_IPA + GUEST_GICD_BYTES).contains(&ipa) {
            Some(Device::Distributor { offset: ipa - GUEST_GICD_IPA })
        } else if (GUEST_GICR_IPA..GUEST_GICR_IPA + gicr_bytes).contains(&ipa) {
            let offset = ipa - GUEST_GICR_IPA;
            Some(Device::Redistributor {
                vcpu: (offset / GUEST_GICR_FRAME_BYTES) as usize,
                offset: offset % GUEST_GICR_FRAME_BYTES,
            })
        } else if (GUEST_UART_IPA..GUEST_UART_IPA + UART_PAGE_BYTES).contains(&ipa) {
            Some(Device::Uart { offset: ipa - GUEST_UART_IPA })
        } else {
            None
        }
    }
}
