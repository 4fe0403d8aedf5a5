//! The table-walk probe: a guest that lets the hardware set access flags (TCR_EL1.HA = 1, as
//! Linux does) while the hypervisor pages its memory, including its own translation tables.
//!
//! The probe turns its MMU on with an identity map: 2 MiB blocks (access flag set) for guest
//! RAM, except a 16 MiB target region mapped by 4 KiB pages through eight level-3 tables. Each
//! round it clears the access flag of every target descriptor (the table pages become dirty),
//! touches a 32 MiB pressure region (the pager evicts the tables and the target pages), then
//! reads every target page, and calls a two-instruction function in every 16th one. Each first
//! access walks a level-3 table page that the pager brought back clean, so mapped read-only at
//! stage 2, and the walk must write the descriptor's access flag: a stage-2 permission fault
//! on the table walk. A hypervisor that takes that for a read maps the page read-only again,
//! and the vCPU takes the same fault forever. `rounds=N` (default 3). Needs `--guest-mib 128`
//! and paged RAM (`--resident-mib 8`).
#![no_std]
#![no_main]

use core::arch::asm;

use asyncpf_probes::{exceptions, probe, Env};

const RAM: u64 = 0x4000_0000;
/// The translation tables: level 1, level 2 (for RAM's gigabyte), then the level-3 tables.
const L1: u64 = 0x4100_0000;
const L2: u64 = L1 + 0x1000;
const L3: u64 = L1 + 0x2000;
/// The target region: 16 MiB of 4 KiB pages, 8 level-3 tables.
const TARGET: u64 = 0x4400_0000;
const TARGET_PAGES: u64 = 4096;
/// The pressure region: 32 MiB, four times the resident memory the test gives.
const PRESSURE: u64 = 0x4500_0000;
const PRESSURE_PAGES: u64 = 8192;
/// Guest RAM the probe maps (128 MiB).
const RAM_BYTES: u64 = 128 << 20;
const BLOCK: u64 = 2 << 20;
const PAGE: u64 = 4096;

/// Descriptor bits (VMSAv8-64, 4 KiB granule).
const VALID_BLOCK: u64 = 0b01;
const VALID_TABLE_OR_PAGE: u64 = 0b11;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const SH_INNER: u64 = 3 << 8;
const AF: u64 = 1 << 10;
const PXN_UXN: u64 = 3 << 53;
/// MAIR_EL1: attribute 0 Device-nGnRnE, attribute 1 Normal write-back.
const MAIR: u64 = 0xff << 8;
/// TCR_EL1: T0SZ = 25 (39-bit VA, walks start at level 1), inner/outer write-back,
/// inner shareable, 4 KiB granule, TTBR1 walks off (EPD1), 40-bit IPS, HA (hardware AF).
const TCR: u64 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32) | (1 << 39);
/// SCTLR_EL1: M, C, I.
const SCTLR_ON: u64 = 1 | (1 << 2) | (1 << 12);
/// `ret`, and `movz x0, #imm16` without its immediate.
const RET: u32 = 0xd65f_03c0;
const MOVZ_X0: u32 = 0xd280_0000;

fn write(addr: u64, value: u64) {
    // SAFETY: every address the probe writes is guest RAM it owns (tables, target, pressure),
    // identity mapped (or the MMU is off).
    unsafe { (addr as *mut u64).write_volatile(value) }
}

fn read(addr: u64) -> u64 {
    // SAFETY: as for `write`: guest RAM the probe owns.
    unsafe { (addr as *const u64).read_volatile() }
}

fn target_descriptor(page: u64) -> u64 {
    L3 + page * 8
}

/// The value stored in target page `page`, and what its function returns.
fn pattern(page: u64) -> u64 {
    page ^ 0x5eed
}

fn tlb_flush() {
    // SAFETY: barriers and a TLB invalidation of this VM's EL1 translations: no memory effect
    // besides making the descriptor stores visible to the walker.
    unsafe { asm!("dsb ishst", "tlbi vmalle1", "dsb ish", "isb", options(nostack)) };
}

fn build_tables() {
    for i in 0..512 {
        write(L1 + i * 8, 0);
        write(L2 + i * 8, 0);
    }
    write(L1, VALID_BLOCK | ATTR_DEVICE | AF | PXN_UXN); // 0..1 GiB: devices (the UART)
    write(L1 + 8, L2 | VALID_TABLE_OR_PAGE); // 1..2 GiB: RAM, through L2
    for block in 0..RAM_BYTES / BLOCK {
        let address = RAM + block * BLOCK;
        let in_target = (TARGET..TARGET + TARGET_PAGES * PAGE).contains(&address);
        let entry = if in_target {
            (L3 + (address - TARGET) / BLOCK * PAGE) | VALID_TABLE_OR_PAGE
        } else {
            address | VALID_BLOCK | ATTR_NORMAL | SH_INNER | AF
        };
        write(L2 + block * 8, entry);
    }
    for page in 0..TARGET_PAGES {
        let address = TARGET + page * PAGE;
        write(target_descriptor(page), address | VALID_TABLE_OR_PAGE | ATTR_NORMAL | SH_INNER | AF);
    }
}

fn mmu_on() {
    // SAFETY: the tables above identity-map everything the probe touches (its image, stack,
    // vectors and the UART keep their addresses), so turning the MMU on changes no address.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "dsb ish",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            "mrs {tmp}, sctlr_el1",
            "orr {tmp}, {tmp}, {on}",
            "msr sctlr_el1, {tmp}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) TCR,
            ttbr = in(reg) L1,
            on = in(reg) SCTLR_ON,
            tmp = out(reg) _,
            options(nostack),
        )
    };
}

/// Fill the target pages: the pattern at offset 0 and, in every 16th page, a function at
/// offset 8 that returns the pattern's low 16 bits.
fn fill_target() {
    for page in 0..TARGET_PAGES {
        let base = TARGET + page * PAGE;
        write(base, pattern(page));
        if page % 16 == 0 {
            let movz = MOVZ_X0 | (((pattern(page) & 0xffff) as u32) << 5);
            write(base + 8, u64::from(movz) | (u64::from(RET) << 32));
            // SAFETY: cache maintenance by address on a page the probe owns, so the new
            // instructions are seen by instruction fetches.
            unsafe {
                asm!("dc cvau, {a}", "dsb ish", "ic ivau, {a}", "dsb ish", "isb", a = in(reg) base + 8, options(nostack))
            };
        }
    }
}

fn call(address: u64) -> u64 {
    let result: u64;
    // SAFETY: `address` holds `movz x0, #imm; ret` (written by `fill_target`, caches
    // maintained); the call clobbers only x0 and the link register.
    unsafe { asm!("blr {f}", f = in(reg) address, out("x0") result, out("x30") _, options(nostack)) };
    result
}

fn tablewalk(env: &Env) -> ! {
    let rounds: u64 = env.arg("rounds").and_then(|r| r.parse().ok()).unwrap_or(3);
    build_tables();
    mmu_on();
    fill_target();
    env.println(format_args!("tablewalk probe: MMU on, TCR_EL1.HA set, {TARGET_PAGES} target pages"));
    let (mut loads, mut calls, mut mismatches, mut flags_set) = (0u64, 0u64, 0u64, 0u64);
    let exceptions_before = exceptions();
    for round in 0..rounds {
        for page in 0..TARGET_PAGES {
            let d = target_descriptor(page);
            write(d, read(d) & !AF);
        }
        tlb_flush();
        for page in 0..PRESSURE_PAGES {
            write(PRESSURE + page * PAGE, round ^ page);
        }
        for page in 0..TARGET_PAGES {
            let base = TARGET + page * PAGE;
            if page % 16 == 0 {
                calls += 1;
                mismatches += u64::from(call(base + 8) != pattern(page) & 0xffff);
            } else {
                loads += 1;
                mismatches += u64::from(read(base) != pattern(page));
            }
        }
        flags_set += (0..TARGET_PAGES).filter(|&p| read(target_descriptor(p)) & AF != 0).count() as u64;
    }
    let faults = exceptions() - exceptions_before;
    env.println(format_args!(
        "tablewalk probe: rounds {rounds}, loads {loads}, calls {calls}, mismatches {mismatches}, \
         access flags set by the walker {flags_set}, exceptions {faults}"
    ));
    env.system_off()
}

probe!(tablewalk);
