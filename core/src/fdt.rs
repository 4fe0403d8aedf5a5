//! The flattened device tree (DTB, version 17) that the hypervisor hands to its guest.
//!
//! Follows the Devicetree Specification v0.4 (structure, `memory`, `cpus`, `chosen`, `aliases`)
//! and the Linux DT bindings of each device (`Documentation/devicetree/bindings/`):
//! `arm/cpus.yaml`, `arm/psci.yaml`, `firmware/sdei.yaml`, `interrupt-controller/arm,gic-v3.yaml`,
//! `timer/arm,arch_timer.yaml`, `serial/pl011.yaml`, `clock/fixed-clock.yaml`,
//! The aim is a tree an unmodified arm64 Linux boots on.
//!
//! Where the bindings and QEMU's `virt` tree differ, this follows the bindings:
//! * the GIC node is `interrupt-controller@…` and the UART `serial@…` (the bindings' node name
//!   patterns), not QEMU's `intc@…` and `pl011@…`;
//! * `/psci` is compatible with `"arm,psci-1.0", "arm,psci-0.2"` only: the binding does not allow
//!   `"arm,psci"` after them, and the PSCI 0.1 function-ID properties it would require are
//!   meaningless for a PSCI 1.x implementation;
//! * the fixed clock is `clock-apb-pclk` (the binding's `clock-…` name pattern).
//!
//! The blob is written with the `vm-fdt` crate (no_std with its `alloc` feature).

use crate::mpidr::{self, AFF2_0_MASK, AFF3_MASK};
use crate::vgic::{GICD_SIZE, GICR_FRAME_SIZE};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use vm_fdt::FdtWriter;

/// What the guest sees; all addresses are guest physical addresses.
#[derive(Clone, Copy, Debug)]
pub struct GuestPlatform<'a> {
    pub ram_base: u64,
    pub ram_size: u64,
    /// MPIDR_EL1 of each vCPU, in vCPU order; only the affinity fields are used.
    pub cpu_mpidrs: &'a [u64],
    /// The 64 KiB distributor.
    pub gicd_base: u64,
    /// The redistributors: one [`GICR_FRAME_SIZE`] frame per vCPU, in vCPU order.
    pub gicr_base: u64,
    /// The PL011's 4 KiB register page.
    pub uart_base: u64,
    /// The PL011 interrupt as an SPI number (INTID = 32 + `uart_spi`).
    pub uart_spi: u32,
    /// The guest's command line, `/chosen/bootargs`.
    pub bootargs: &'a str,
    /// An initial RAM disk in guest RAM, `[start, end)`: `/chosen/linux,initrd-start` and
    /// `linux,initrd-end` (Linux's boot protocol, dt-schema `chosen.yaml`).
    pub initrd: Option<(u64, u64)>,
    /// The guest has the CPU's PMUv3 (`crate::pmu::offered`): a `pmu` node
    /// (`arm,armv8-pmuv3`, `perf/arm,pmu.yaml`) with its overflow interrupt, PPI 7.
    pub pmu: bool,
}

/// Phandle of the GIC (the root's `interrupt-parent`).
pub const PHANDLE_GIC: u32 = 1;
/// Phandle of the PL011's fixed 24 MHz APB clock.
pub const PHANDLE_APB_PCLK: u32 = 2;

/// The `compatible` of the root node.
pub const MACHINE_COMPATIBLE: &str = "linux,dummy-virt";
/// Size of the PL011 register page.
pub const UART_SIZE: u64 = 0x1000;
/// Frequency of the PL011's clocks.
pub const UART_CLOCK_HZ: u32 = 24_000_000;

/// Interrupt specifier cells of the GICv3 binding: `<type number flags>`.
pub mod irq {
    /// Cell 1: shared peripheral interrupt; cell 2 is then INTID - 32.
    pub const TYPE_SPI: u32 = 0;
    /// Cell 1: private peripheral interrupt; cell 2 is then INTID - 16.
    pub const TYPE_PPI: u32 = 1;
    /// Cell 3: level-sensitive, active high (`IRQ_TYPE_LEVEL_HIGH`).
    pub const LEVEL_HIGH: u32 = 4;
    /// Cells per interrupt specifier (`#interrupt-cells`).
    pub const CELLS: u32 = 3;
}

/// The generic timer's PPI numbers, in the order `arm,armv8-timer`'s `interrupts` lists them
/// (the INTIDs are these plus 16, Arm BSA recommendations).
pub mod timer_ppi {
    pub const SECURE_PHYS: u32 = 13;
    pub const NON_SECURE_PHYS: u32 = 14;
    pub const VIRT: u32 = 11;
    pub const HYP_PHYS: u32 = 10;
}

/// Every node of the guest's device tree with all the properties it can have, in the order
/// they are written: the list that docs/abi.md §6 ("The device tree, node by node") mirrors
/// and the tests check both against. `cpu@N` stands for each vCPU's node (N = its MPIDR
/// affinity); `/pmu` exists only when the guest has the CPU's PMUv3, `/chosen`'s
/// `linux,initrd-*` only with an initrd.
pub const NODES: &[(&str, &[&str])] = &[
    ("/", &["compatible", "#address-cells", "#size-cells", "interrupt-parent", "dma-coherent"]),
    ("/chosen", &["bootargs", "stdout-path", "linux,initrd-start", "linux,initrd-end"]),
    ("/aliases", &["serial0"]),
    ("/memory@40000000", &["device_type", "reg"]),
    ("/cpus", &["#address-cells", "#size-cells"]),
    ("/cpus/cpu@N", &["device_type", "compatible", "reg", "enable-method"]),
    ("/psci", &["compatible", "method"]),
    ("/firmware", &[]),
    ("/firmware/sdei", &["compatible", "method"]),
    (
        "/interrupt-controller@8000000",
        &[
            "compatible",
            "#interrupt-cells",
            "#address-cells",
            "interrupt-controller",
            "reg",
            "#redistributor-regions",
            "phandle",
        ],
    ),
    ("/timer", &["compatible", "interrupts"]),
    ("/pmu", &["compatible", "interrupts"]),
    ("/clock-apb-pclk", &["compatible", "#clock-cells", "clock-frequency", "clock-output-names", "phandle"]),
    ("/serial@9000000", &["compatible", "reg", "interrupts", "clocks", "clock-names"]),
];

/// Builds the device tree blob (DTB version 17) describing `platform`.
pub fn build(platform: &GuestPlatform) -> Result<Vec<u8>, FdtError> {
    platform.build_fdt()
}

/// Why no device tree could be built.
#[derive(Debug, PartialEq, Eq)]
pub enum FdtError {
    /// `cpu_mpidrs` is empty.
    NoCpus,
    /// Two vCPUs have the same MPIDR affinity.
    DuplicateCpu { affinity: u64 },
    /// A region (`what`) is empty or wraps past the end of the address space.
    BadRegion { what: &'static str, base: u64, size: u64 },
    /// The guest command line contains a NUL byte.
    BootargsContainNul,
    /// The writer refused the tree (a bug in this module).
    Writer(vm_fdt::Error),
}

impl fmt::Display for FdtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdtError::NoCpus => write!(f, "device tree: the guest has no vCPUs"),
            FdtError::DuplicateCpu { affinity } => {
                write!(f, "device tree: two vCPUs have the same MPIDR affinity {affinity:#x}")
            }
            FdtError::BadRegion { what, base, size } => write!(
                f,
                "device tree: {what} at {base:#x} of size {size:#x} is empty or wraps past the end \
                 of the address space"
            ),
            FdtError::BootargsContainNul => {
                write!(f, "device tree: the guest command line contains a NUL byte")
            }
            FdtError::Writer(e) => write!(f, "device tree writer: {e}"),
        }
    }
}

impl From<vm_fdt::Error> for FdtError {
    fn from(e: vm_fdt::Error) -> Self {
        match e {
            vm_fdt::Error::InvalidString => FdtError::BootargsContainNul,
            other => FdtError::Writer(other),
        }
    }
}

fn check_region(what: &'static str, base: u64, size: u64) -> Result<(), FdtError> {
    if size == 0 || base.checked_add(size).is_none() {
        return Err(FdtError::BadRegion { what, base, size });
    }
    Ok(())
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| String::from(*s)).collect()
}

impl GuestPlatform<'_> {
    /// Size of the redistributor region: one frame per vCPU.
    pub fn gicr_size(&self) -> Option<u64> {
        GICR_FRAME_SIZE.checked_mul(u64::try_from(self.cpu_mpidrs.len()).ok()?)
    }

    /// Path of the UART node, which `/chosen/stdout-path` and `/aliases/serial0` name.
    pub fn uart_path(&self) -> String {
        format!("/serial@{:x}", self.uart_base)
    }

    fn validate(&self) -> Result<(), FdtError> {
        if self.cpu_mpidrs.is_empty() {
            return Err(FdtError::NoCpus);
        }
        for (i, &a) in self.cpu_mpidrs.iter().enumerate() {
            let affinity = mpidr::affinity(a);
            if self.cpu_mpidrs[..i].iter().any(|&b| mpidr::affinity(b) == affinity) {
                return Err(FdtError::DuplicateCpu { affinity });
            }
        }
        check_region("guest RAM", self.ram_base, self.ram_size)?;
        check_region("GIC distributor", self.gicd_base, GICD_SIZE)?;
        let gicr_size = self.gicr_size().unwrap_or(0);
        check_region("GIC redistributors", self.gicr_base, gicr_size)?;
        check_region("PL011", self.uart_base, UART_SIZE)
    }

    /// Builds the device tree blob; the same as [`build`].
    pub fn build_fdt(&self) -> Result<Vec<u8>, FdtError> {
        self.validate()?;
        // Aff3 needs a second address cell in /cpus (arm/cpus.yaml).
        let wide_cpu_reg = self.cpu_mpidrs.iter().any(|&m| m & AFF3_MASK != 0);
        let mut fdt = FdtWriter::new()?;
        // The boot CPU's physical ID: the low cell of its reg, as the DT spec defines it.
        fdt.set_boot_cpuid_phys((mpidr::affinity(self.cpu_mpidrs[0]) & AFF2_0_MASK) as u32);

        let root = fdt.begin_node("")?;
        fdt.property_string("compatible", MACHINE_COMPATIBLE)?;
        fdt.property_u32("#address-cells", 2)?;
        fdt.property_u32("#size-cells", 2)?;
        fdt.property_u32("interrupt-parent", PHANDLE_GIC)?;
        // As in QEMU's own tree: DMA (there is none yet, but Linux checks) is cache-coherent,
        // so Linux does not warn that ARCH_DMA_MINALIGN is below CTR_EL0.CWG (a64fx: 256).
        fdt.property_null("dma-coherent")?;

        let chosen = fdt.begin_node("chosen")?;
        fdt.property_string("bootargs", self.bootargs)?;
        fdt.property_string("stdout-path", &self.uart_path())?;
        if let Some((start, end)) = self.initrd {
            fdt.property_u64("linux,initrd-start", start)?;
            fdt.property_u64("linux,initrd-end", end)?;
        }
        fdt.end_node(chosen)?;

        let aliases = fdt.begin_node("aliases")?;
        fdt.property_string("serial0", &self.uart_path())?;
        fdt.end_node(aliases)?;

        let memory = fdt.begin_node(&format!("memory@{:x}", self.ram_base))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[self.ram_base, self.ram_size])?;
        fdt.end_node(memory)?;

        let cpus = fdt.begin_node("cpus")?;
        fdt.property_u32("#address-cells", if wide_cpu_reg { 2 } else { 1 })?;
        fdt.property_u32("#size-cells", 0)?;
        for &mpidr in self.cpu_mpidrs {
            let affinity = mpidr::affinity(mpidr);
            let cpu = fdt.begin_node(&format!("cpu@{affinity:x}"))?;
            fdt.property_string("device_type", "cpu")?;
            fdt.property_string("compatible", "arm,armv8")?;
            if wide_cpu_reg {
                fdt.property_u64("reg", affinity)?;
            } else {
                fdt.property_u32("reg", affinity as u32)?;
            }
            fdt.property_string("enable-method", "psci")?;
            fdt.end_node(cpu)?;
        }
        fdt.end_node(cpus)?;

        let psci = fdt.begin_node("psci")?;
        fdt.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
        fdt.property_string("method", "hvc")?;
        fdt.end_node(psci)?;

        // The hypervisor is the guest's SDEI dispatcher (`firmware/sdei.yaml` binding).
        let firmware = fdt.begin_node("firmware")?;
        let sdei = fdt.begin_node("sdei")?;
        fdt.property_string("compatible", "arm,sdei-1.0")?;
        fdt.property_string("method", "hvc")?;
        fdt.end_node(sdei)?;
        fdt.end_node(firmware)?;

        let gic = fdt.begin_node(&format!("interrupt-controller@{:x}", self.gicd_base))?;
        fdt.property_string("compatible", "arm,gic-v3")?;
        fdt.property_u32("#interrupt-cells", irq::CELLS)?;
        // No child nodes (no ITS): an interrupt provider states that it has no address cells.
        fdt.property_u32("#address-cells", 0)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_array_u64("reg", &[self.gicd_base, GICD_SIZE, self.gicr_base, self.gicr_size().unwrap_or(0)])?;
        fdt.property_u32("#redistributor-regions", 1)?;
        fdt.property_phandle(PHANDLE_GIC)?;
        fdt.end_node(gic)?;

        let timer = fdt.begin_node("timer")?;
        fdt.property_string("compatible", "arm,armv8-timer")?;
        let mut timer_irqs = Vec::new();
        for ppi in [timer_ppi::SECURE_PHYS, timer_ppi::NON_SECURE_PHYS, timer_ppi::VIRT, timer_ppi::HYP_PHYS] {
            timer_irqs.extend([irq::TYPE_PPI, ppi, irq::LEVEL_HIGH]);
        }
        fdt.property_array_u32("interrupts", &timer_irqs)?;
        fdt.end_node(timer)?;

        if self.pmu {
            // As QEMU's `virt` tree and KVM guests' have it (no CPU mask: GICv3).
            let pmu = fdt.begin_node("pmu")?;
            fdt.property_string("compatible", "arm,armv8-pmuv3")?;
            fdt.property_array_u32("interrupts", &[irq::TYPE_PPI, crate::pmu::OVERFLOW_PPI, irq::LEVEL_HIGH])?;
            fdt.end_node(pmu)?;
        }

        let clock = fdt.begin_node("clock-apb-pclk")?;
        fdt.property_string("compatible", "fixed-clock")?;
        fdt.property_u32("#clock-cells", 0)?;
        fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
        fdt.property_string("clock-output-names", "clk24mhz")?;
        fdt.property_phandle(PHANDLE_APB_PCLK)?;
        fdt.end_node(clock)?;

        let uart = fdt.begin_node(&self.uart_path()[1..])?;
        fdt.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
        fdt.property_array_u64("reg", &[self.uart_base, UART_SIZE])?;
        fdt.property_array_u32("interrupts", &[irq::TYPE_SPI, self.uart_spi, irq::LEVEL_HIGH])?;
        fdt.property_array_u32("clocks", &[PHANDLE_APB_PCLK, PHANDLE_APB_PCLK])?;
        fdt.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
        fdt.end_node(uart)?;

        fdt.end_node(root)?;
        Ok(fdt.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::fdt::node::FdtNode;
    use ::fdt::Fdt;
    use alloc::string::ToString;
    use std::collections::BTreeSet;

    const MPIDRS: [u64; 4] = [0x8000_0000, 0x8000_0001, 0x8000_0002, 0x8000_0003];

    fn platform<'a>(mpidrs: &'a [u64], bootargs: &'a str) -> GuestPlatform<'a> {
        GuestPlatform {
            ram_base: 0x4000_0000,
            ram_size: 128 << 20,
            cpu_mpidrs: mpidrs,
            gicd_base: 0x0800_0000,
            gicr_base: 0x080a_0000,
            uart_base: 0x0900_0000,
            uart_spi: 1,
            initrd: None,
            bootargs,
            pmu: false,
        }
    }

    fn node<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> FdtNode<'b, 'a> {
        fdt.find_node(path).unwrap_or_else(|| panic!("no node {path}"))
    }

    fn raw<'a>(node: FdtNode<'_, 'a>, name: &str) -> &'a [u8] {
        node.property(name).unwrap_or_else(|| panic!("no property {name} in {}", node.name)).value
    }

    fn cells(node: FdtNode<'_, '_>, name: &str) -> Vec<u32> {
        raw(node, name).chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect()
    }

    fn string_list<'a>(node: FdtNode<'_, 'a>, name: &str) -> Vec<&'a str> {
        let bytes = raw(node, name);
        assert_eq!(bytes.last(), Some(&0), "{name} is not NUL-terminated");
        core::str::from_utf8(&bytes[..bytes.len() - 1]).unwrap().split('\0').collect()
    }

    fn property_names<'a>(node: FdtNode<'_, 'a>) -> BTreeSet<&'a str> {
        node.properties().map(|p| p.name).collect()
    }

    fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    fn children(node: FdtNode<'_, '_>) -> Vec<String> {
        node.children().map(|c| c.name.to_string()).collect()
    }

    #[test]
    fn every_node_and_property() {
        let blob = platform(&MPIDRS, "scenario=smp seed=1").build_fdt().unwrap();
        // Header: magic, version 17, boot CPU.
        assert_eq!(&blob[0..4], &0xd00d_feedu32.to_be_bytes());
        assert_eq!(u32::from_be_bytes(blob[20..24].try_into().unwrap()), 17);
        assert_eq!(u32::from_be_bytes(blob[28..32].try_into().unwrap()), 0);
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.total_size(), blob.len());
        assert_eq!(fdt.memory_reservations().count(), 0);

        let root = node(&fdt, "/");
        assert_eq!(
            children(root),
            [
                "chosen",
                "aliases",
                "memory@40000000",
                "cpus",
                "psci",
                "firmware",
                "interrupt-controller@8000000",
                "timer",
                "clock-apb-pclk",
                "serial@9000000"
            ]
        );
        assert_eq!(
            property_names(root),
            set(&["compatible", "#address-cells", "#size-cells", "interrupt-parent", "dma-coherent"])
        );
        assert_eq!(string_list(root, "compatible"), ["linux,dummy-virt"]);
        assert_eq!(cells(root, "#address-cells"), [2]);
        assert_eq!(cells(root, "#size-cells"), [2]);
        assert_eq!(cells(root, "interrupt-parent"), [PHANDLE_GIC]);

        let chosen = node(&fdt, "/chosen");
        assert_eq!(property_names(chosen), set(&["bootargs", "stdout-path"]));
        assert_eq!(fdt.chosen().bootargs(), Some("scenario=smp seed=1"));
        assert_eq!(string_list(chosen, "stdout-path"), ["/serial@9000000"]);
        let aliases = node(&fdt, "/aliases");
        assert_eq!(property_names(aliases), set(&["serial0"]));
        assert_eq!(string_list(aliases, "serial0"), ["/serial@9000000"]);
        assert_eq!(fdt.aliases().unwrap().resolve("serial0"), Some("/serial@9000000"));

        let memory = node(&fdt, "/memory@40000000");
        assert_eq!(property_names(memory), set(&["device_type", "reg"]));
        assert_eq!(string_list(memory, "device_type"), ["memory"]);
        assert_eq!(cells(memory, "reg"), [0, 0x4000_0000, 0, 128 << 20]);
        let region = fdt.memory().regions().next().unwrap();
        assert_eq!(region.starting_address as u64, 0x4000_0000);
        assert_eq!(region.size, Some(128 << 20));

        let cpus = node(&fdt, "/cpus");
        assert_eq!(property_names(cpus), set(&["#address-cells", "#size-cells"]));
        assert_eq!(cells(cpus, "#address-cells"), [1]);
        assert_eq!(cells(cpus, "#size-cells"), [0]);
        assert_eq!(children(cpus), ["cpu@0", "cpu@1", "cpu@2", "cpu@3"]);
        for (i, cpu) in cpus.children().enumerate() {
            assert_eq!(property_names(cpu), set(&["device_type", "compatible", "reg", "enable-method"]));
            assert_eq!(string_list(cpu, "device_type"), ["cpu"]);
            assert_eq!(string_list(cpu, "compatible"), ["arm,armv8"]);
            assert_eq!(cells(cpu, "reg"), [i as u32]);
            assert_eq!(string_list(cpu, "enable-method"), ["psci"]);
        }
        assert_eq!(fdt.cpus().count(), 4);

        let sdei = node(&fdt, "/firmware/sdei");
        assert_eq!(property_names(sdei), set(&["compatible", "method"]));
        assert_eq!(string_list(sdei, "compatible"), ["arm,sdei-1.0"]);
        assert_eq!(string_list(sdei, "method"), ["hvc"]);
        let psci = node(&fdt, "/psci");
        assert_eq!(property_names(psci), set(&["compatible", "method"]));
        assert_eq!(string_list(psci, "compatible"), ["arm,psci-1.0", "arm,psci-0.2"]);
        assert_eq!(string_list(psci, "method"), ["hvc"]);

        let firmware = node(&fdt, "/firmware");
        assert_eq!(children(firmware), ["sdei"]);
        assert!(property_names(firmware).is_empty(), "the binding gives /firmware no properties");

        let gic = node(&fdt, "/interrupt-controller@8000000");
        assert_eq!(
            property_names(gic),
            set(&[
                "compatible",
                "#interrupt-cells",
                "#address-cells",
                "interrupt-controller",
                "reg",
                "#redistributor-regions",
                "phandle"
            ])
        );
        assert_eq!(string_list(gic, "compatible"), ["arm,gic-v3"]);
        assert_eq!(cells(gic, "#interrupt-cells"), [3]);
        assert_eq!(cells(gic, "#address-cells"), [0]);
        assert!(raw(gic, "interrupt-controller").is_empty());
        assert_eq!(cells(gic, "reg"), [0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 4 * 0x2_0000]);
        assert_eq!(cells(gic, "#redistributor-regions"), [1]);
        assert_eq!(cells(gic, "phandle"), [PHANDLE_GIC]);
        assert_eq!(fdt.find_phandle(PHANDLE_GIC).unwrap().name, gic.name);

        let timer = node(&fdt, "/timer");
        assert_eq!(property_names(timer), set(&["compatible", "interrupts"]));
        assert_eq!(string_list(timer, "compatible"), ["arm,armv8-timer"]);
        assert_eq!(cells(timer, "interrupts"), [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]);
        assert!(fdt.find_node("/pmu").is_none(), "no PMU offered, no node");

        let clock = node(&fdt, "/clock-apb-pclk");
        assert_eq!(
            property_names(clock),
            set(&["compatible", "#clock-cells", "clock-frequency", "clock-output-names", "phandle"])
        );
        assert_eq!(string_list(clock, "compatible"), ["fixed-clock"]);
        assert_eq!(cells(clock, "#clock-cells"), [0]);
        assert_eq!(cells(clock, "clock-frequency"), [24_000_000]);
        assert_eq!(string_list(clock, "clock-output-names"), ["clk24mhz"]);
        assert_eq!(cells(clock, "phandle"), [PHANDLE_APB_PCLK]);

        let uart = node(&fdt, "/serial@9000000");
        assert_eq!(property_names(uart), set(&["compatible", "reg", "interrupts", "clocks", "clock-names"]));
        assert_eq!(string_list(uart, "compatible"), ["arm,pl011", "arm,primecell"]);
        assert_eq!(cells(uart, "reg"), [0, 0x0900_0000, 0, 0x1000]);
        assert_eq!(cells(uart, "interrupts"), [0, 1, 4]);
        assert_eq!(cells(uart, "clocks"), [PHANDLE_APB_PCLK, PHANDLE_APB_PCLK]);
        assert_eq!(string_list(uart, "clock-names"), ["uartclk", "apb_pclk"]);
        // The UART inherits the root's interrupt-parent.
        assert_eq!(root.interrupt_parent().unwrap().name, gic.name);
    }

    /// Every node of `fdt` as (path, property names), depth first; `cpu@…` under `/cpus` is
    /// written `cpu@N`.
    fn walk(node: FdtNode<'_, '_>, path: &str, out: &mut Vec<(String, Vec<String>)>) {
        let properties = node.properties().map(|p| p.name.to_string()).collect();
        out.push((path.to_string(), properties));
        for child in node.children() {
            let name = if path == "/cpus" && child.name.starts_with("cpu@") { "cpu@N" } else { child.name };
            let child_path = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
            walk(child, &child_path, out);
        }
    }

    /// The tree with everything optional present (2 vCPUs, the PMU, an initrd) has exactly the
    /// nodes and properties of [`NODES`], in its order; without the options, the same minus
    /// `/pmu` and the initrd properties.
    #[test]
    fn the_tree_is_exactly_the_node_list() {
        let expected = |pmu: bool, initrd: bool| -> Vec<(String, Vec<String>)> {
            let mut out = Vec::new();
            for &(path, properties) in NODES {
                if path == "/pmu" && !pmu {
                    continue;
                }
                let properties = properties.iter().filter(|p| initrd || !p.starts_with("linux,initrd"));
                let entry = (path.to_string(), properties.map(|p| p.to_string()).collect());
                // One entry per vCPU.
                let copies = if path == "/cpus/cpu@N" { 2 } else { 1 };
                out.extend(core::iter::repeat_n(entry, copies));
            }
            out
        };
        for (pmu, initrd) in [(true, true), (false, false)] {
            let mut p = platform(&MPIDRS[..2], "x");
            p.pmu = pmu;
            p.initrd = initrd.then_some((0x4800_0000, 0x4800_1000));
            let blob = p.build_fdt().unwrap();
            let fdt = Fdt::new(&blob).unwrap();
            let mut found = Vec::new();
            walk(node(&fdt, "/"), "/", &mut found);
            // The walk visits /pmu after /timer, as NODES lists it.
            assert_eq!(found, expected(pmu, initrd), "pmu {pmu}, initrd {initrd}");
        }
    }

    /// docs/abi.md §6 lists the same nodes and properties as [`NODES`]: its table `| node |
    /// properties | … |` has one row per node, `| `path` | `prop`, `prop` … | … |`.
    #[test]
    fn abi_md_lists_every_node_and_property() {
        let abi = include_str!("../../docs/abi.md");
        let section = abi.split("\n## 6.").nth(1).expect("abi.md has a §6");
        let section = section.split("\n## ").next().unwrap();
        let table = section.split("| node | properties |").nth(1).expect("§6 has the device tree's node table");
        let mut rows = Vec::new();
        for line in table.lines().map(str::trim).skip(1).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let Some(path) = cells.get(1).and_then(|c| c.strip_prefix('`')).and_then(|c| c.strip_suffix('`')) else {
                continue; // the header and its rule
            };
            // The backquoted names (`none` has no quotes).
            let properties: Vec<String> = cells[2].split('`').skip(1).step_by(2).map(String::from).collect();
            rows.push((path.to_string(), properties));
        }
        let expected: Vec<(String, Vec<String>)> =
            NODES.iter().map(|(p, props)| (p.to_string(), props.iter().map(|s| s.to_string()).collect())).collect();
        assert_eq!(rows, expected, "docs/abi.md §6 and fdt::NODES differ");
    }

    /// With the PMU offered, a `pmu` node after the timer names its overflow interrupt, PPI 7
    /// (INTID 23), level-high, as QEMU's `virt` tree does.
    #[test]
    fn pmu_node_when_offered() {
        let blob = build(&GuestPlatform { pmu: true, ..platform(&MPIDRS, "") }).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let pmu = node(&fdt, "/pmu");
        assert_eq!(property_names(pmu), set(&["compatible", "interrupts"]));
        assert_eq!(string_list(pmu, "compatible"), ["arm,armv8-pmuv3"]);
        assert_eq!(cells(pmu, "interrupts"), [1, 7, 4]);
        let names = children(node(&fdt, "/"));
        let at = |n: &str| names.iter().position(|c| c == n).unwrap();
        assert_eq!(at("pmu"), at("timer") + 1);
    }

    #[test]
    fn cpu_reg_holds_affinity_only() {
        // Bit 31 (RES1), U (30) and MT (24) are not part of reg.
        let mpidrs = [0xC100_0000 | 0x0001_0203, 0x8000_0000 | 0x0001_0100];
        let blob = build(&platform(&mpidrs, "")).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let cpus = node(&fdt, "/cpus");
        assert_eq!(children(cpus), ["cpu@10203", "cpu@10100"]);
        assert_eq!(cells(node(&fdt, "/cpus/cpu@10100"), "reg"), [0x10100]);
        assert_eq!(u32::from_be_bytes(blob[28..32].try_into().unwrap()), 0x10203);
        assert_eq!(cells(node(&fdt, "/interrupt-controller@8000000"), "reg")[6..], [0, 2 * 0x2_0000]);
        assert_eq!(string_list(node(&fdt, "/chosen"), "bootargs"), [""]);
    }

    #[test]
    fn aff3_uses_two_address_cells() {
        let mpidrs = [0x8000_0000, 0x01_8000_0000];
        let blob = build(&platform(&mpidrs, "")).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(cells(node(&fdt, "/cpus"), "#address-cells"), [2]);
        assert_eq!(children(node(&fdt, "/cpus")), ["cpu@0", "cpu@100000000"]);
        assert_eq!(cells(node(&fdt, "/cpus/cpu@100000000"), "reg"), [1, 0]);
        assert_eq!(cells(node(&fdt, "/cpus/cpu@0"), "reg"), [0, 0]);
    }

    #[test]
    fn errors() {
        let p = platform(&[], "");
        assert_eq!(build(&p), Err(FdtError::NoCpus));
        let p = platform(&[0x8000_0001, 0x1], "");
        assert_eq!(build(&p), Err(FdtError::DuplicateCpu { affinity: 1 }));
        let p = platform(&MPIDRS, "a\0b");
        assert_eq!(build(&p), Err(FdtError::BootargsContainNul));
        let mut p = platform(&MPIDRS, "");
        p.ram_size = 0;
        assert!(matches!(build(&p), Err(FdtError::BadRegion { what: "guest RAM", .. })));
        let mut p = platform(&MPIDRS, "");
        p.gicr_base = u64::MAX - 0x1000;
        let err = build(&p).unwrap_err();
        assert!(err.to_string().contains("GIC redistributors at 0xffffffffffffefff"), "{err}");
        let mut p = platform(&MPIDRS, "");
        p.uart_base = u64::MAX;
        assert!(matches!(build(&p), Err(FdtError::BadRegion { what: "PL011", .. })));
        assert!(FdtError::DuplicateCpu { affinity: 1 }.to_string().contains("0x1"));
    }

    /// Decompiles the blob with `dtc` (when installed) and requires it to be silent: dtc's
    /// checks cover unit addresses vs `reg`, phandles, interrupt providers, node names.
    #[test]
    fn dtc_accepts_the_blob_without_warnings() {
        use std::process::Command;
        if Command::new("dtc").arg("--version").output().is_err() {
            std::eprintln!("dtc not installed; skipping the dtc check");
            return;
        }
        for mpidrs in [&MPIDRS[..], &[0x8000_0000, 0x01_0000_0100]] {
            let blob = build(&platform(mpidrs, "console=ttyAMA0")).unwrap();
            let path =
                std::env::temp_dir().join(format!("asyncpf-core-fdt-{}-{}.dtb", std::process::id(), mpidrs.len()));
            std::fs::write(&path, &blob).unwrap();
            let out = Command::new("dtc").args(["-I", "dtb", "-O", "dts", "-o", "-"]).arg(&path).output().unwrap();
            std::fs::remove_file(&path).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "dtc failed: {stderr}");
            assert!(stderr.is_empty(), "dtc warnings:\n{stderr}");
            let dts = String::from_utf8_lossy(&out.stdout);
            assert!(dts.contains("stdout-path = \"/serial@9000000\";"), "{dts}");
        }
    }

    #[test]
    fn initrd_in_chosen() {
        let mut p = platform(&MPIDRS, "console=ttyAMA0");
        p.initrd = Some((0x4800_0000, 0x4812_3456));
        let blob = p.build_fdt().unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let chosen = node(&fdt, "/chosen");
        assert_eq!(property_names(chosen), set(&["bootargs", "stdout-path", "linux,initrd-start", "linux,initrd-end"]));
        let u64_of = |name| u64::from_be_bytes(chosen.property(name).unwrap().value.try_into().unwrap());
        assert_eq!((u64_of("linux,initrd-start"), u64_of("linux,initrd-end")), (0x4800_0000, 0x4812_3456));
    }
}
