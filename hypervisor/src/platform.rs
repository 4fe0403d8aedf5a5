//! The physical machine, as QEMU's device tree describes it. For an ELF kernel QEMU places its
//! device tree at the start of RAM; the hypervisor reads memory, CPUs, the GIC, the UART and its
//! own command line (`/chosen/bootargs`, from QEMU's `-append`) from there, and the
//! `virtio,mmio` transports among which `backing` looks for its disk.

use alloc::vec::Vec;

/// Where QEMU's `virt` machine leaves the device tree for a bare-metal (ELF) kernel.
pub const QEMU_DTB_ADDRESS: usize = 0x4000_0000;

/// What the hypervisor needs to know about the machine.
pub struct Platform {
    pub ram_base: u64,
    pub ram_size: u64,
    /// MPIDR affinity of each physical CPU, in device-tree order; the index is the CPU number.
    pub cpu_mpidrs: Vec<u64>,
    pub gicd_base: u64,
    pub gicr_base: u64,
    pub gicr_size: u64,
    pub uart_base: u64,
    pub bootargs: &'static str,
    /// Every `virtio,mmio` node, in device-tree order (most are empty slots: DeviceID 0).
    pub virtio_mmio: Vec<VirtioMmioNode>,
}

/// One `virtio,mmio` transport as the device tree describes it.
#[derive(Clone, Copy, Debug)]
pub struct VirtioMmioNode {
    pub base: u64,
    pub size: u64,
    /// GIC INTID of its interrupt (an SPI), if the node has a usable `interrupts` property.
    pub intid: Option<u32>,
    /// The interrupt is edge-triggered (QEMU says rising edge) rather than level-sensitive.
    pub edge_triggered: bool,
    /// The node says `dma-coherent`: the device snoops the CPUs' caches.
    pub dma_coherent: bool,
}

/// GIC device-tree binding: `interrupts = <type number flags>`; type 0 is an SPI, whose INTID
/// is 32 + number; flags 1 and 2 are edge-triggered, 4 and 8 level-sensitive.
const GIC_FDT_CELLS: usize = 3;
const GIC_FDT_TYPE_SPI: u32 = 0;
const GIC_SPI_BASE_INTID: u32 = 32;
const GIC_FDT_FLAGS_EDGE: u32 = 0b0011;

/// Reads the `virtio,mmio` nodes of the device tree.
fn virtio_mmio_nodes(fdt: &fdt::Fdt) -> Vec<VirtioMmioNode> {
    fdt.all_nodes()
        .filter(|node| node.compatible().is_some_and(|c| c.all().any(|s| s == "virtio,mmio")))
        .filter_map(|node| {
            let reg = node.reg()?.next()?;
            let cells: Vec<u32> = node
                .property("interrupts")
                .map(|p| p.value.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect())
                .unwrap_or_default();
            let spi = (cells.len() == GIC_FDT_CELLS && cells[0] == GIC_FDT_TYPE_SPI).then(|| (cells[1], cells[2]));
            Some(VirtioMmioNode {
                base: reg.starting_address as u64,
                size: reg.size.unwrap_or(0) as u64,
                intid: spi.map(|(number, _)| GIC_SPI_BASE_INTID + number),
                edge_triggered: spi.is_some_and(|(_, flags)| flags & GIC_FDT_FLAGS_EDGE != 0),
                dma_coherent: node.property("dma-coherent").is_some(),
            })
        })
        .collect()
}

/// Why the platform could not be read.
#[derive(Debug)]
pub enum PlatformError {
    BadDeviceTree,
    Missing(&'static str),
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadDeviceTree => write!(f, "no valid device tree at {QEMU_DTB_ADDRESS:#x}"),
            Self::Missing(what) => write!(f, "the device tree has no {what}"),
        }
    }
}

/// Read the machine description from QEMU's device tree.
pub fn discover() -> Result<Platform, PlatformError> {
    // SAFETY: QEMU copies a flattened device tree to the start of RAM before the first
    // instruction runs, and nothing writes there afterwards (the hypervisor image starts 2 MiB
    // higher); `from_ptr` checks the header and reads at most `totalsize` bytes.
    let fdt = unsafe { fdt::Fdt::from_ptr(QEMU_DTB_ADDRESS as *const u8) }.map_err(|_| PlatformError::BadDeviceTree)?;
    let memory = fdt.memory().regions().next().ok_or(PlatformError::Missing("memory node"))?;
    let ram_size = memory.size.ok_or(PlatformError::Missing("memory size"))? as u64;
    let cpu_mpidrs: Vec<u64> = fdt.cpus().map(|cpu| cpu.ids().first() as u64).collect();
    if cpu_mpidrs.is_empty() {
        return Err(PlatformError::Missing("cpus"));
    }
    let gic = fdt.find_compatible(&["arm,gic-v3"]).ok_or(PlatformError::Missing("arm,gic-v3 node"))?;
    let mut gic_regs = gic.reg().ok_or(PlatformError::Missing("GIC registers"))?;
    let gicd = gic_regs.next().ok_or(PlatformError::Missing("GIC distributor"))?;
    let gicr = gic_regs.next().ok_or(PlatformError::Missing("GIC redistributors"))?;
    let uart = fdt
        .chosen()
        .stdout()
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))
        .ok_or(PlatformError::Missing("PL011 console"))?;
    let uart_reg = uart.reg().and_then(|mut r| r.next()).ok_or(PlatformError::Missing("PL011 registers"))?;
    Ok(Platform {
        ram_base: memory.starting_address as u64,
        ram_size,
        cpu_mpidrs,
        gicd_base: gicd.starting_address as u64,
        gicr_base: gicr.starting_address as u64,
        gicr_size: gicr.size.unwrap_or(0) as u64,
        uart_base: uart_reg.starting_address as u64,
        bootargs: fdt.chosen().bootargs().unwrap_or(""),
        virtio_mmio: virtio_mmio_nodes(&fdt),
    })
}
