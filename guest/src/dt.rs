//! Reads the platform description from the flattened device tree passed in x0 at boot.

use crate::psci::Conduit;
use fdt::Fdt;

/// Most CPUs the kernel handles.
pub const MAX_CPUS: usize = 8;
/// Most RAM ranges (memory node `reg` entries) the kernel maps.
pub const MAX_RAM_RANGES: usize = 4;
/// Most described address ranges remembered (to find holes between them).
pub const MAX_DESCRIBED: usize = 48;

/// A physical address range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub base: u64,
    pub size: u64,
}

impl Range {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
    /// True when the two ranges share a byte.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// Everything the kernel needs from the device tree.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    pub ram: [Range; MAX_RAM_RANGES],
    pub ram_count: usize,
    /// MPIDR affinities of the CPUs, in device-tree order.
    pub cpus: [u64; MAX_CPUS],
    pub cpu_count: usize,
    pub psci: Conduit,
    pub gicd: Range,
    pub gicr: Range,
    /// INTID of the EL1 virtual timer PPI.
    pub vtimer_intid: u32,
    pub uart: Range,
    pub bootargs: &'static str,
    /// Every address range that some node's `reg` or `ranges` describes (device windows).
    pub described: [Range; MAX_DESCRIBED],
    pub described_count: usize,
    pub dtb: Range,
}

impl Platform {
    /// The RAM ranges.
    pub fn ram(&self) -> &[Range] {
        &self.ram[..self.ram_count]
    }
    /// The CPU affinities.
    pub fn cpus(&self) -> &[u64] {
        &self.cpus[..self.cpu_count]
    }
    /// The described device ranges.
    pub fn described(&self) -> &[Range] {
        &self.described[..self.described_count]
    }
}

/// Why the device tree could not be used.
#[derive(Clone, Copy, Debug)]
pub enum DtError {
    BadHeader,
    Missing(&'static str),
    Unsupported(&'static str),
}

impl core::fmt::Display for DtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DtError::BadHeader => f.write_str("not a valid flattened device tree"),
            DtError::Missing(what) => write!(f, "missing {what}"),
            DtError::Unsupported(what) => write!(f, "unsupported {what}"),
        }
    }
}

fn be_cells(bytes: &[u8], cells: usize) -> Option<(u64, &[u8])> {
    if cells > 2 || bytes.len() < cells * 4 {
        return None;
    }
    let mut v = 0u64;
    for chunk in bytes[..cells * 4].chunks_exact(4) {
        v = (v << 32) | u64::from(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    Some((v, &bytes[cells * 4..]))
}

fn first_reg(node: fdt::node::FdtNode<'_, '_>, index: usize) -> Option<Range> {
    let region = node.reg()?.nth(index)?;
    Some(Range { base: region.starting_address as u64, size: region.size.unwrap_or(0) as u64 })
}

/// The PL011 named by `/chosen/stdout-path`, if the device tree gets that far (for reporting
/// why the rest of it is unusable).
///
/// # Safety
/// As for [`parse`].
pub unsafe fn console_base(dtb: usize) -> Option<usize> {
    // SAFETY: forwarded to the caller.
    let fdt = unsafe { Fdt::from_ptr(dtb as *const u8) }.ok()?;
    first_reg(fdt.chosen().stdout()?, 0).map(|r| r.base as usize)
}

/// Parses the device tree at physical address `dtb`.
///
/// # Safety
/// `dtb` must point to a valid flattened device tree that stays in place (it is referenced by
/// `bootargs` for the kernel's lifetime).
pub unsafe fn parse(dtb: usize) -> Result<Platform, DtError> {
    // SAFETY: the boot protocol passes a DTB address; the caller vouches for it.
    let fdt: Fdt<'static> = unsafe { Fdt::from_ptr(dtb as *const u8) }.map_err(|_| DtError::BadHeader)?;

    let mut ram = [Range::default(); MAX_RAM_RANGES];
    let mut ram_count = 0;
    for node in fdt.all_nodes() {
        let is_memory = node.property("device_type").and_then(|p| p.as_str()) == Some("memory");
        if !is_memory {
            continue;
        }
        for region in node.reg().into_iter().flatten() {
            if ram_count < MAX_RAM_RANGES {
                ram[ram_count] = Range { base: region.starting_address as u64, size: region.size.unwrap_or(0) as u64 };
                ram_count += 1;
            }
        }
    }
    if ram_count == 0 {
        return Err(DtError::Missing("memory node"));
    }

    let mut cpus = [0u64; MAX_CPUS];
    let mut cpu_count = 0;
    for cpu in fdt.cpus() {
        let method = cpu.property("enable-method").and_then(|p| p.as_str());
        if cpu_count > 0 && method != Some("psci") {
            return Err(DtError::Unsupported("cpu enable-method other than psci"));
        }
        if cpu_count < MAX_CPUS {
            cpus[cpu_count] = cpu.ids().first() as u64;
            cpu_count += 1;
        }
    }
    if cpu_count == 0 {
        return Err(DtError::Missing("/cpus/cpu@N"));
    }

    let psci_node = fdt.find_node("/psci").ok_or(DtError::Missing("/psci"))?;
    let psci = match psci_node.property("method").and_then(|p| p.as_str()) {
        Some("hvc") => Conduit::Hvc,
        Some("smc") => Conduit::Smc,
        _ => return Err(DtError::Unsupported("/psci method")),
    };

    let gic = fdt.find_compatible(&["arm,gic-v3"]).ok_or(DtError::Missing("arm,gic-v3"))?;
    let gicd = first_reg(gic, 0).ok_or(DtError::Missing("GICD reg"))?;
    let gicr = first_reg(gic, 1).ok_or(DtError::Missing("GICR reg"))?;

    // `interrupts` of the architected timer: secure phys, non-secure phys, virtual, hyp phys;
    // each <type number flags> with type 1 = PPI (INTID = 16 + number).
    let timer = fdt.find_compatible(&["arm,armv8-timer"]).ok_or(DtError::Missing("arm,armv8-timer"))?;
    let irqs = timer.property("interrupts").ok_or(DtError::Missing("timer interrupts"))?.value;
    let vtimer = irqs.get(24..36).ok_or(DtError::Missing("timer virtual interrupt"))?;
    let (kind, rest) = be_cells(vtimer, 1).ok_or(DtError::BadHeader)?;
    let (number, _) = be_cells(rest, 1).ok_or(DtError::BadHeader)?;
    if kind != 1 {
        return Err(DtError::Unsupported("virtual timer interrupt is not a PPI"));
    }
    let vtimer_intid = 16 + number as u32;

    let chosen = fdt.chosen();
    let uart_node = chosen.stdout().ok_or(DtError::Missing("/chosen/stdout-path"))?;
    let uart_is_pl011 = uart_node.compatible().is_some_and(|c| c.all().any(|s| s == "arm,pl011"));
    if !uart_is_pl011 {
        return Err(DtError::Unsupported("stdout is not a PL011"));
    }
    let uart = first_reg(uart_node, 0).ok_or(DtError::Missing("PL011 reg"))?;
    let bootargs = chosen.bootargs().unwrap_or("");

    let mut described = [Range::default(); MAX_DESCRIBED];
    let mut described_count = 0;
    let root = fdt.find_node("/").ok_or(DtError::Missing("/"))?;
    let root_cells = root.cell_sizes();
    let mut add = |r: Range| {
        if r.size > 0 && described_count < MAX_DESCRIBED {
            described[described_count] = r;
            described_count += 1;
        }
    };
    for node in root.children() {
        // `reg` in the root's address space.
        for region in node.reg().into_iter().flatten() {
            add(Range { base: region.starting_address as u64, size: region.size.unwrap_or(0) as u64 });
        }
        // A bus's `ranges`: (child address, parent address, size) triples; the parent side
        // is in the root's address space.
        if let Some(ranges) = node.property("ranges") {
            let own = node.cell_sizes();
            let mut rest = ranges.value;
            while !rest.is_empty() {
                let Some(after_child) = rest.get(own.address_cells * 4..) else { break };
                let Some((parent, after_parent)) = be_cells(after_child, root_cells.address_cells) else { break };
                let Some((size, after_size)) = be_cells(after_parent, own.size_cells) else { break };
                add(Range { base: parent, size });
                rest = after_size;
            }
        }
        // Children of buses with identity translation (`ranges;`), such as the GIC's ITS.
        if node.property("ranges").is_some_and(|p| p.value.is_empty()) {
            for child in node.children() {
                for region in child.reg().into_iter().flatten() {
                    add(Range { base: region.starting_address as u64, size: region.size.unwrap_or(0) as u64 });
                }
            }
        }
    }

    Ok(Platform {
        ram,
        ram_count,
        cpus,
        cpu_count,
        psci,
        gicd,
        gicr,
        vtimer_intid,
        uart,
        bootargs,
        described,
        described_count,
        dtb: Range { base: dtb as u64, size: fdt.total_size() as u64 },
    })
}
