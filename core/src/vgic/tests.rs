//! Register-by-register tests against IHI 0069, and randomized tests of delivery.

use super::*;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const RD: u64 = 0;
const SGI: u64 = regs::gicr::SGI_BASE;

fn dist(num_spis: u32) -> Distributor {
    Distributor::new(num_spis, 4)
}

fn r(d: &Distributor, offset: u64) -> u64 {
    d.read(offset, 4).unwrap()
}

fn w(d: &mut Distributor, offset: u64, value: u64) {
    d.write(offset, 4, value).unwrap()
}

fn rr(rd: &Redistributor, offset: u64) -> u64 {
    rd.read(offset, 4).unwrap()
}

fn rw(rd: &mut Redistributor, offset: u64, value: u64) {
    rd.write(offset, 4, value).unwrap()
}

fn awake_redist(mpidr: u64) -> Redistributor {
    let mut rd = Redistributor::new(mpidr, 0, true);
    rw(&mut rd, RD + 0x14, 0);
    rd
}

// ---- Distributor -------------------------------------------------------------------------

#[test]
fn gicd_ctlr() {
    let mut d = dist(64);
    // ARE (bit 4) and DS (bit 6) read as one, the enables reset to zero, RWP is zero.
    assert_eq!(r(&d, 0x0), 0x50);
    assert!(!d.group1_enabled());
    w(&mut d, 0x0, 0x2);
    assert_eq!(r(&d, 0x0), 0x52);
    assert!(d.group1_enabled());
    w(&mut d, 0x0, 0xffff_ffff);
    assert_eq!(r(&d, 0x0), 0x53);
    w(&mut d, 0x0, 0);
    assert_eq!(r(&d, 0x0), 0x50);
    assert!(!d.group1_enabled());
    assert_eq!(d.read(0x0, 8), Err(MmioError::BadSize));
    assert_eq!(d.read(0x0, 1), Err(MmioError::BadSize));
}

#[test]
fn gicd_typer() {
    let typer = r(&dist(64), 0x4);
    assert_eq!(typer & 0x1f, 2, "ITLinesNumber: 32 * (2 + 1) INTIDs");
    assert_eq!((typer >> 5) & 0x7, 3, "CPUNumber");
    assert_eq!((typer >> 19) & 0x1f, 9, "IDbits: 10 bits");
    assert_ne!(typer & (1 << 24), 0, "A3V");
    assert_ne!(typer & (1 << 25), 0, "No1N");
    for (bit, name) in [(8, "ESPI"), (9, "NMI"), (10, "SecurityExtn"), (16, "MBIS"), (17, "LPIS")] {
        assert_eq!(typer & (1 << bit), 0, "{name}");
    }
    assert_eq!((typer >> 11) & 0x1f, 0, "num_LPIs");
    assert_eq!(r(&dist(1), 0x4) & 0x1f, 1);
    assert_eq!(r(&dist(0), 0x4) & 0x1f, 0);
    assert_eq!(r(&dist(988), 0x4) & 0x1f, 31);
    assert_eq!(r(&dist(5000), 0x4) & 0x1f, 31);
    assert_eq!((r(&Distributor::new(32, 100), 0x4) >> 5) & 7, 7);
    // Read-only.
    let mut d = dist(64);
    w(&mut d, 0x4, 0);
    assert_eq!(r(&d, 0x4), typer);
}

#[test]
fn gicd_id_registers() {
    let mut d = dist(64);
    assert_eq!(r(&d, 0x8), 0x4100_043b, "IIDR: ProductID 'A', Arm");
    assert_eq!(r(&d, 0xc), 0, "TYPER2");
    assert_eq!(r(&d, 0xffe8), 0x30, "PIDR2.ArchRev = 3");
    w(&mut d, 0xffe8, 0);
    w(&mut d, 0x8, 0);
    assert_eq!(r(&d, 0xffe8), 0x30);
    assert_eq!(r(&d, 0x8), 0x4100_043b);
}

#[test]
fn gicd_sgi_ppi_registers_are_raz_wi() {
    let mut d = dist(64);
    for offset in [0x080, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0xc00, 0xc04] {
        w(&mut d, offset, 0xffff_ffff);
        assert_eq!(r(&d, offset), 0, "{offset:#x}");
    }
    for offset in (0x400..0x420).step_by(4) {
        w(&mut d, offset, 0xffff_ffff);
        assert_eq!(r(&d, offset), 0, "{offset:#x}");
    }
}

#[test]
fn gicd_enable_w1s_w1c() {
    let mut d = dist(64);
    w(&mut d, 0x104, 0x0000_00f0);
    w(&mut d, 0x104, 0x0000_0003);
    assert_eq!(r(&d, 0x104), 0xf3);
    assert_eq!(r(&d, 0x184), 0xf3, "ICENABLER reads the enables too");
    w(&mut d, 0x184, 0x0000_0011);
    assert_eq!(r(&d, 0x104), 0xe2);
    w(&mut d, 0x104, 0);
    assert_eq!(r(&d, 0x104), 0xe2, "writing 0 has no effect");
    // Block 2 is independent.
    w(&mut d, 0x108, 0x8000_0000);
    assert_eq!(r(&d, 0x108), 0x8000_0000);
    assert_eq!(r(&d, 0x104), 0xe2);
}

#[test]
fn gicd_pending_and_active_w1s_w1c() {
    let mut d = dist(64);
    w(&mut d, 0x204, 0b1010);
    assert_eq!(r(&d, 0x284), 0b1010);
    w(&mut d, 0x284, 0b0010);
    assert_eq!(r(&d, 0x204), 0b1000);
    w(&mut d, 0x304, 0b0110);
    assert_eq!(r(&d, 0x384), 0b0110);
    w(&mut d, 0x384, 0b0100);
    assert_eq!(r(&d, 0x304), 0b0010);
    d.set_pending(34).unwrap();
    assert_eq!(r(&d, 0x204), 0b1100);
    d.clear_pending(35).unwrap();
    assert_eq!(r(&d, 0x204), 0b0100);
    assert_eq!(d.set_pending(31), Err(BadIntId(31)));
    assert_eq!(d.set_pending(96), Err(BadIntId(96)));
    assert_eq!(d.clear_pending(1020), Err(BadIntId(1020)));
}

#[test]
fn gicd_group() {
    let mut d = dist(64);
    assert_eq!(r(&d, 0x84), 0, "Group 0 at reset");
    w(&mut d, 0x84, 0xffff_0000);
    assert_eq!(r(&d, 0x84), 0xffff_0000);
    w(&mut d, 0x84, 0x1);
    assert_eq!(r(&d, 0x84), 0x1, "IGROUPR is a plain read/write register");
}

#[test]
fn gicd_unimplemented_spis_are_raz_wi() {
    // 40 SPIs: INTIDs 32..72, i.e. block 1 fully and 8 bits of block 2.
    let mut d = dist(40);
    for base in [0x080, 0x100, 0x200, 0x300] {
        w(&mut d, base + 8, 0xffff_ffff);
        assert_eq!(r(&d, base + 8), 0xff, "{base:#x}");
        w(&mut d, base + 12, 0xffff_ffff);
        assert_eq!(r(&d, base + 12), 0, "{base:#x}");
    }
    w(&mut d, 0x444, 0xffff_ffff);
    w(&mut d, 0x448, 0xffff_ffff);
    assert_eq!(r(&d, 0x444), 0xffff_ffff, "INTIDs 68..72");
    assert_eq!(r(&d, 0x448), 0, "INTIDs 72..76 are not implemented");
    assert!(d.set_pending(71).is_ok());
    assert_eq!(d.set_pending(72), Err(BadIntId(72)));
    assert_eq!(d.read(0x6000 + 8 * 72, 8), Ok(0));
    assert_eq!(d.route(72), None);
}

#[test]
fn gicd_priority_byte_and_word() {
    let mut d = dist(64);
    // IPRIORITYR8 covers INTIDs 32..36.
    w(&mut d, 0x420, 0x4030_2010);
    assert_eq!(d.read(0x420, 1), Ok(0x10));
    assert_eq!(d.read(0x423, 1), Ok(0x40));
    d.write(0x421, 1, 0xa0).unwrap();
    assert_eq!(r(&d, 0x420), 0x4030_a010);
    d.write(0x422, 1, 0x1ff).unwrap();
    assert_eq!(r(&d, 0x420), 0x40ff_a010, "a byte write takes the low byte");
    assert_eq!(d.read(0x45f, 1), Ok(0), "INTID 95 reset priority");
    assert_eq!(d.read(0x420, 2), Err(MmioError::BadSize));
    assert_eq!(d.read(0x420, 8), Err(MmioError::BadSize));
    assert_eq!(d.read(0x421, 4), Err(MmioError::Unaligned));
}

#[test]
fn gicd_icfgr() {
    let mut d = dist(64);
    assert_eq!(r(&d, 0xc08), 0, "SPIs reset level-sensitive");
    w(&mut d, 0xc08, 0xffff_ffff);
    assert_eq!(r(&d, 0xc08), 0xaaaa_aaaa, "Int_config[0] is RES0");
    w(&mut d, 0xc0c, 0x0000_0008);
    assert_eq!(r(&d, 0xc0c), 0x8);
    assert_eq!(r(&d, 0xc08), 0xaaaa_aaaa, "ICFGR2 and ICFGR3 are separate");
    w(&mut d, 0xc08, 0x2);
    assert_eq!(r(&d, 0xc08), 0x2);
    assert_eq!(r(&d, 0xc10), 0, "block 2 (INTIDs 64..80) reset");
}

#[test]
fn gicd_irouter() {
    let mut d = dist(64);
    let irouter = |intid: u64| 0x6000 + 8 * intid;
    assert_eq!(d.read(irouter(32), 8), Ok(0));
    d.write(irouter(33), 8, 0xffff_ffff_ffff_ffff).unwrap();
    // Aff3 (39:32) and Aff2..Aff0 (23:0) kept; IRM (31) RAZ/WI; the rest RES0.
    assert_eq!(d.read(irouter(33), 8), Ok(0xff_00ff_ffff));
    assert_eq!(d.route(33), Some(0xff_00ff_ffff));
    // 32-bit halves.
    d.write(irouter(34), 4, 0x0001_0203).unwrap();
    d.write(irouter(34) + 4, 4, 0x7).unwrap();
    assert_eq!(d.read(irouter(34), 8), Ok(0x7_0001_0203));
    assert_eq!(d.read(irouter(34), 4), Ok(0x0001_0203));
    assert_eq!(d.read(irouter(34) + 4, 4), Ok(0x7));
    assert_eq!(d.route(34), Some(0x7_0001_0203));
    // IROUTER0..31 are reserved, as are 1020..1023.
    assert_eq!(d.read(irouter(0), 8), Err(MmioError::Reserved));
    assert_eq!(d.read(irouter(31), 8), Err(MmioError::Reserved));
    assert_eq!(d.write(irouter(1020), 8, 1), Err(MmioError::Reserved));
    // Unimplemented SPI: RAZ/WI.
    assert_eq!(d.write(irouter(1019), 8, 1), Ok(()));
    assert_eq!(d.read(irouter(1019), 8), Ok(0));
    assert_eq!(d.read(irouter(33), 1), Err(MmioError::BadSize));
    assert_eq!(d.read(irouter(33) + 4, 8), Err(MmioError::Unaligned));
    assert_eq!(d.route(31), None);
}

#[test]
fn gicd_affinity_routing_raz_wi_registers() {
    let mut d = dist(64);
    // ITARGETSR, byte-accessible, RAZ/WI with ARE.
    d.write(0x820, 1, 0xff).unwrap();
    assert_eq!(d.read(0x820, 1), Ok(0));
    assert_eq!(d.read(0x820, 4), Ok(0));
    // SGIR (WI), CPENDSGIR/SPENDSGIR (RAZ/WI), IGRPMODR/NSACR (RAZ/WI with DS = 1).
    for offset in [0xf00, 0xf10, 0xf20, 0xd04, 0xe08] {
        w(&mut d, offset, 0xffff_ffff);
        assert_eq!(r(&d, offset), 0, "{offset:#x}");
    }
}

#[test]
fn gicd_bad_accesses() {
    let mut d = dist(64);
    assert_eq!(d.read(0x10, 4), Err(MmioError::Reserved), "STATUSR: unimplemented");
    assert_eq!(d.write(0x40, 4, 1), Err(MmioError::Reserved), "SETSPI_NSR: no MBIS");
    assert_eq!(d.read(0x5000, 4), Err(MmioError::Reserved));
    assert_eq!(d.read(0xffd0, 4), Err(MmioError::Reserved), "PIDR4: not implemented");
    assert_eq!(d.read(0x2, 4), Err(MmioError::Unaligned));
    assert_eq!(d.read(0x104, 3), Err(MmioError::BadSize));
    assert_eq!(d.read(0x104, 0), Err(MmioError::BadSize));
    assert_eq!(d.read(0x104, 16), Err(MmioError::BadSize));
    assert_eq!(d.read(0x104, 2), Err(MmioError::BadSize));
    assert_eq!(d.write(0x100, 8, u64::MAX), Err(MmioError::BadSize));
    assert_eq!(d.write(0x104, 8, u64::MAX), Err(MmioError::Unaligned));
    assert_eq!(d.read(0x1_0000, 4), Err(MmioError::OutOfFrame));
    assert_eq!(d.read(u64::MAX - 3, 4), Err(MmioError::OutOfFrame));
    assert_eq!(r(&d, 0x104), 0, "rejected writes change nothing");
}

// ---- Redistributor -----------------------------------------------------------------------

#[test]
fn gicr_typer() {
    let mut rd = Redistributor::new(0x3_8000_0102, 5, true);
    let expected = 0x0300_0102u64 << 32 | 5 << 8 | 1 << 4;
    assert_eq!(rd.read(RD + 0x8, 8), Ok(expected));
    assert_eq!(rd.read(RD + 0x8, 4), Ok(expected & 0xffff_ffff));
    assert_eq!(rd.read(RD + 0xc, 4), Ok(expected >> 32));
    rd.write(RD + 0x8, 8, 0).unwrap();
    assert_eq!(rd.read(RD + 0x8, 8), Ok(expected), "read-only");
    let not_last = Redistributor::new(1, 0, false);
    assert_eq!(not_last.read(RD + 0x8, 8), Ok(1 << 32));
    assert_eq!(not_last.affinity(), 1);
    assert_eq!(rd.read(RD + 0x8, 2), Err(MmioError::BadSize));
}

/// GICR_WAKER as KVM emulates it: reads as zero (awake, the handshake Linux does completes at
/// once), writes are ignored, and interrupts are delivered whether or not the guest ever wrote it.
#[test]
fn gicr_waker_is_always_awake() {
    let mut d = dist(64);
    w(&mut d, 0x0, 0x2);
    let mut rd = Redistributor::new(0, 0, true);
    assert_eq!(rr(&rd, RD + 0x14), 0, "awake at reset");
    enable_private(&mut rd, 3, 0x20);
    rd.set_pending(3).unwrap();
    assert_eq!(peek_next(&d, &rd), Some(Pending { intid: 3, priority: 0x20 }), "without touching WAKER");
    rw(&mut rd, RD + 0x14, 0b010);
    assert_eq!(rr(&rd, RD + 0x14), 0, "ProcessorSleep writes are ignored");
    assert!(has_next(&d, &rd));
    assert_eq!(rd.write(RD + 0x14, 2, 0), Err(MmioError::BadSize));
}

#[test]
fn gicr_rd_base_registers() {
    let mut rd = Redistributor::new(0, 0, true);
    assert_eq!(rr(&rd, RD), 0, "CTLR: no LPIs, RWP = 0");
    rw(&mut rd, RD, 0xffff_ffff);
    assert_eq!(rr(&rd, RD), 0);
    assert_eq!(rr(&rd, RD + 0x4), 0x4100_043b, "IIDR");
    assert_eq!(rr(&rd, RD + 0xffe8), 0x30, "PIDR2.ArchRev = 3");
    assert_eq!(rd.read(RD + 0x10, 4), Err(MmioError::Reserved), "STATUSR");
    assert_eq!(rd.read(RD + 0x70, 8), Err(MmioError::Reserved), "PROPBASER: no LPIs");
    assert_eq!(rd.read(RD + 0x14, 8), Err(MmioError::Unaligned));
    assert_eq!(rd.read(RD + 0x10, 8), Err(MmioError::Reserved));
    assert_eq!(rd.read(0x2_0000, 4), Err(MmioError::OutOfFrame));
}

#[test]
fn gicr_sgi_frame_bitmaps() {
    let mut rd = Redistributor::new(0, 0, true);
    for (set, clear) in [(0x100, 0x180), (0x200, 0x280), (0x300, 0x380)] {
        rw(&mut rd, SGI + set, 0x8001_0001);
        rw(&mut rd, SGI + set, 0x0000_0100);
        assert_eq!(rr(&rd, SGI + set), 0x8001_0101, "{set:#x}");
        assert_eq!(rr(&rd, SGI + clear), 0x8001_0101, "{clear:#x}");
        rw(&mut rd, SGI + clear, 0x8000_0001);
        assert_eq!(rr(&rd, SGI + set), 0x0001_0100, "{set:#x}");
    }
    rw(&mut rd, SGI + 0x80, 0xffff_ffff);
    assert_eq!(rr(&rd, SGI + 0x80), 0xffff_ffff, "IGROUPR0");
    rd.set_pending(31).unwrap();
    assert_eq!(rr(&rd, SGI + 0x200), 0x8001_0100);
    rd.clear_pending(8).unwrap();
    assert_eq!(rr(&rd, SGI + 0x200), 0x8001_0000);
    assert_eq!(rd.set_pending(32), Err(BadIntId(32)));
    assert_eq!(rd.clear_pending(32), Err(BadIntId(32)));
    // Only register block 0 exists in a redistributor.
    assert_eq!(rd.read(SGI + 0x104, 4), Err(MmioError::Reserved));
    assert_eq!(rd.write(SGI + 0x84, 4, 1), Err(MmioError::Reserved));
}

#[test]
fn gicr_sgi_frame_priority_and_config() {
    let mut rd = Redistributor::new(0, 0, true);
    rw(&mut rd, SGI + 0x41c, 0xa0b0_c0d0);
    assert_eq!(rd.read(SGI + 0x41f, 1), Ok(0xa0));
    rd.write(SGI + 0x400, 1, 0x10).unwrap();
    assert_eq!(rr(&rd, SGI + 0x400), 0x10);
    assert_eq!(rd.read(SGI + 0x420, 4), Err(MmioError::Reserved), "IPRIORITYR8");
    assert_eq!(rd.read(SGI + 0x400, 2), Err(MmioError::BadSize));
    // ICFGR0: SGIs are edge-triggered and read-only.
    assert_eq!(rr(&rd, SGI + 0xc00), 0xaaaa_aaaa);
    rw(&mut rd, SGI + 0xc00, 0);
    assert_eq!(rr(&rd, SGI + 0xc00), 0xaaaa_aaaa);
    // ICFGR1: PPIs, programmable, reset level.
    assert_eq!(rr(&rd, SGI + 0xc04), 0);
    rw(&mut rd, SGI + 0xc04, 0xffff_ffff);
    assert_eq!(rr(&rd, SGI + 0xc04), 0xaaaa_aaaa);
    assert_eq!(rd.read(SGI + 0xc08, 4), Err(MmioError::Reserved), "ICFGR2");
    // IGRPMODR0 and NSACR: RAZ/WI.
    for offset in [0xd00, 0xe00] {
        rw(&mut rd, SGI + offset, 0xffff_ffff);
        assert_eq!(rr(&rd, SGI + offset), 0, "{offset:#x}");
    }
    assert_eq!(rd.read(SGI + 0xd04, 4), Err(MmioError::Reserved), "IGRPMODR1");
    assert_eq!(rd.read(SGI, 4), Err(MmioError::Reserved));
}

// ---- Delivery ----------------------------------------------------------------------------

/// Enables INTID `intid` as Group 1 with `priority`, through the guest-visible registers.
fn enable_private(rd: &mut Redistributor, intid: u64, priority: u8) {
    let bit = 1 << intid;
    let group = rr(rd, SGI + 0x80);
    rw(rd, SGI + 0x80, group | bit);
    rw(rd, SGI + 0x100, bit);
    rd.write(SGI + 0x400 + intid, 1, priority.into()).unwrap();
}

fn enable_spi(d: &mut Distributor, intid: u64, priority: u8, route: u64) {
    let (block, bit) = (4 * (intid / 32), 1 << (intid % 32));
    let group = r(d, 0x80 + block);
    w(d, 0x80 + block, group | bit);
    w(d, 0x100 + block, bit);
    d.write(0x400 + intid, 1, priority.into()).unwrap();
    d.write(0x6000 + 8 * intid, 8, route).unwrap();
}

#[test]
fn redistributor_delivery_rules() {
    let mut rd = awake_redist(0);
    enable_private(&mut rd, 27, 0xa0);
    rd.set_pending(27).unwrap();
    assert!(!rd.has_deliverable(false), "distributor Group 1 disabled");
    assert_eq!(rd.peek_deliverable(true), Some(Pending { intid: 27, priority: 0xa0 }));
    // Group 0: not delivered.
    rw(&mut rd, SGI + 0x80, 0);
    assert_eq!(rd.peek_deliverable(true), None);
    rw(&mut rd, SGI + 0x80, 1 << 27);
    // Disabled: not delivered.
    rw(&mut rd, SGI + 0x180, 1 << 27);
    assert_eq!(rd.peek_deliverable(true), None);
    rw(&mut rd, SGI + 0x100, 1 << 27);
    // Active: not delivered.
    rw(&mut rd, SGI + 0x300, 1 << 27);
    assert_eq!(rd.peek_deliverable(true), None);
    rw(&mut rd, SGI + 0x380, 1 << 27);
    // "Asleep" (a ProcessorSleep write, ignored): still delivered.
    rw(&mut rd, RD + 0x14, 0b10);
    assert!(rd.peek_deliverable(true).is_some());
    // A higher-priority SGI wins; equal priorities go to the lowest INTID.
    enable_private(&mut rd, 1, 0x80);
    enable_private(&mut rd, 3, 0x80);
    rd.set_pending(3).unwrap();
    rd.set_pending(1).unwrap();
    assert_eq!(rd.take_deliverable(true), Some(Pending { intid: 1, priority: 0x80 }));
    assert_eq!(rr(&rd, SGI + 0x200), 1 << 27 | 1 << 3, "taking clears pending");
    assert_eq!(rd.take_deliverable(true), Some(Pending { intid: 3, priority: 0x80 }));
    assert_eq!(rd.take_deliverable(true), Some(Pending { intid: 27, priority: 0xa0 }));
    assert_eq!(rd.take_deliverable(true), None);
}

#[test]
fn spis_go_to_their_route() {
    let mut d = dist(64);
    w(&mut d, 0x0, 0x2);
    enable_spi(&mut d, 33, 0x40, 0x1);
    enable_spi(&mut d, 40, 0x20, 0x0);
    d.set_pending(33).unwrap();
    d.set_pending(40).unwrap();
    assert_eq!(d.peek_deliverable_for(0x8000_0001), Some(Pending { intid: 33, priority: 0x40 }));
    assert!(d.has_deliverable_for(0x8000_0000));
    assert_eq!(d.take_deliverable_for(0x8000_0000), Some(Pending { intid: 40, priority: 0x20 }));
    assert_eq!(d.take_deliverable_for(0x8000_0000), None);
    assert_eq!(d.take_deliverable_for(0x2), None);
    // Group 1 disabled in GICD_CTLR: nothing.
    w(&mut d, 0x0, 0x1);
    assert_eq!(d.peek_deliverable_for(0x1), None);
    w(&mut d, 0x0, 0x2);
    assert_eq!(d.take_deliverable_for(0x1), Some(Pending { intid: 33, priority: 0x40 }));
    assert_eq!(r(&d, 0x204), 0);
}

#[test]
fn take_next_weighs_spis_and_private_interrupts() {
    let mut d = dist(64);
    let mut rd = Redistributor::new(0x8000_0100, 1, false);
    w(&mut d, 0x0, 0x2);
    enable_spi(&mut d, 50, 0x20, 0x100);
    enable_private(&mut rd, 27, 0x30);
    enable_private(&mut rd, 5, 0x20);
    d.set_pending(50).unwrap();
    rd.set_pending(27).unwrap();
    rd.set_pending(5).unwrap();
    assert!(has_next(&d, &rd), "delivered without a GICR_WAKER write");
    assert_eq!(take_next(&mut d, &mut rd), Some(Pending { intid: 5, priority: 0x20 }));
    assert_eq!(take_next(&mut d, &mut rd), Some(Pending { intid: 50, priority: 0x20 }));
    assert_eq!(take_next(&mut d, &mut rd), Some(Pending { intid: 27, priority: 0x30 }));
    assert_eq!(take_next(&mut d, &mut rd), None);
    assert_eq!(r(&d, 0x204), 0);
    assert_eq!(rr(&rd, SGI + 0x200), 0);
}

#[test]
fn error_messages() {
    use alloc::string::ToString;
    assert!(MmioError::Reserved.to_string().contains("RAZ/WI"));
    assert!(MmioError::Unaligned.to_string().contains("misaligned"));
    assert!(MmioError::BadSize.to_string().contains("size"));
    assert!(MmioError::OutOfFrame.to_string().contains("beyond"));
    assert_eq!(BadIntId(40).to_string(), "INTID 40 is not handled here");
}

// ---- Randomized --------------------------------------------------------------------------

const VCPUS: u64 = 2;
const SPIS: u32 = 64;

#[derive(Clone, Debug)]
enum Op {
    DistWrite {
        offset: u64,
        size: u8,
        value: u64,
    },
    RedistWrite {
        vcpu: usize,
        offset: u64,
        size: u8,
        value: u64,
    },
    SetPending {
        vcpu: usize,
        intid: u32,
    },
    ClearPending {
        vcpu: usize,
        intid: u32,
    },
    Take {
        vcpu: usize,
    },
    /// GICD_CTLR.EnableGrp1.
    Group1Enable(bool),
    /// GICR_WAKER.ProcessorSleep.
    Wake {
        vcpu: usize,
        awake: bool,
    },
    /// Set (`on`) or clear a bit of a bitmap register pair through ISxxx / ICxxx.
    Bit {
        vcpu: usize,
        intid: u32,
        set_base: u64,
        clear_base: u64,
        on: bool,
    },
    /// Read-modify-write of an IGROUPR bit.
    Group {
        vcpu: usize,
        intid: u32,
        group1: bool,
    },
    Priority {
        vcpu: usize,
        intid: u32,
        priority: u8,
    },
    Route {
        intid: u32,
        vcpu: u64,
    },
    /// What a driver does: Group 1, priority, enable.
    Configure {
        vcpu: usize,
        intid: u32,
        priority: u8,
    },
}

/// Offsets of the registers that decide delivery, and some random ones.
fn dist_offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0x0u64),
        (0u64..3, prop::sample::select(vec![0x80u64, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380]))
            .prop_map(|(n, base)| base + 4 * n),
        (0x400u64..0x460),
        (32u64..96).prop_map(|intid| 0x6000 + 8 * intid),
        (0u64..0x1_0000),
    ]
}

fn redist_offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0x14u64),
        prop::sample::select(vec![0x80u64, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380]).prop_map(|o| SGI + o),
        (0x400u64..0x420).prop_map(|o| SGI + o),
        (0u64..0x2_0000),
    ]
}

fn size() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![1u8, 2, 4, 4, 4, 8])
}

/// Routes are mostly to one of the vCPUs.
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..VCPUS, any::<u32>().prop_map(u64::from), any::<u64>()]
}

/// Mostly a few INTIDs (so that the conditions for delivery meet), sometimes any.
fn intid() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(vec![0u32, 1, 15, 27, 31, 32, 33, 63, 64, 95]),
        1 => 0u32..1100,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let vcpu = 0..VCPUS as usize;
    // Enable and pending more often than active, which blocks delivery.
    let bit_pairs = prop::sample::select(vec![
        (0x100u64, 0x180u64),
        (0x100, 0x180),
        (0x200, 0x280),
        (0x200, 0x280),
        (0x300, 0x380),
    ]);
    prop_oneof![
        1 => prop::bool::weighted(0.8).prop_map(Op::Group1Enable),
        1 => (vcpu.clone(), prop::bool::weighted(0.8)).prop_map(|(vcpu, awake)| Op::Wake { vcpu, awake }),
        4 => (vcpu.clone(), intid(), bit_pairs, prop::bool::weighted(0.7)).prop_map(
            |(vcpu, intid, (set_base, clear_base), on)| Op::Bit { vcpu, intid, set_base, clear_base, on }
        ),
        2 => (vcpu.clone(), intid(), prop::bool::weighted(0.8))
            .prop_map(|(vcpu, intid, group1)| Op::Group { vcpu, intid, group1 }),
        2 => (vcpu.clone(), intid(), any::<u8>())
            .prop_map(|(vcpu, intid, priority)| Op::Priority { vcpu, intid, priority }),
        1 => (intid(), 0..VCPUS).prop_map(|(intid, vcpu)| Op::Route { intid, vcpu }),
        1 => (dist_offset(), size(), value()).prop_map(|(offset, size, value)| Op::DistWrite {
            offset,
            size,
            value
        }),
        1 => (vcpu.clone(), redist_offset(), size(), value()).prop_map(|(vcpu, offset, size, value)| {
            Op::RedistWrite {
                vcpu,
                offset,
                size,
                value,
            }
        }),
        4 => (vcpu.clone(), intid()).prop_map(|(vcpu, intid)| Op::SetPending { vcpu, intid }),
        1 => (vcpu.clone(), intid()).prop_map(|(vcpu, intid)| Op::ClearPending { vcpu, intid }),
        3 => vcpu.clone().prop_map(|vcpu| Op::Take { vcpu }),
        3 => (vcpu, intid(), any::<u8>())
            .prop_map(|(vcpu, intid, priority)| Op::Configure { vcpu, intid, priority }),
    ]
}

fn bit(value: u64, n: u32) -> bool {
    value & (1 << n) != 0
}

/// The deliverable interrupts of `vcpu` with their priorities, computed from nothing but
/// guest-visible register reads.
fn deliverable_by_registers(d: &Distributor, rd: &Redistributor, vcpu: u64) -> Vec<Pending> {
    let mut out = Vec::new();
    let group1 = bit(r(d, 0x0), 1);
    let awake = !bit(rr(rd, RD + 0x14), 1);
    if !group1 || !awake {
        return out;
    }
    for intid in 0..32u32 {
        let n = intid;
        let pending = bit(rr(rd, SGI + 0x200), n);
        let enabled = bit(rr(rd, SGI + 0x100), n);
        let grp1 = bit(rr(rd, SGI + 0x80), n);
        let active = bit(rr(rd, SGI + 0x300), n);
        if pending && enabled && grp1 && !active {
            let priority = rd.read(SGI + 0x400 + u64::from(intid), 1).unwrap() as u8;
            out.push(Pending { intid, priority });
        }
    }
    for intid in 32..32 + SPIS {
        let block = 4 * u64::from(intid / 32);
        let n = intid % 32;
        let pending = bit(r(d, 0x200 + block), n);
        let enabled = bit(r(d, 0x100 + block), n);
        let grp1 = bit(r(d, 0x80 + block), n);
        let active = bit(r(d, 0x300 + block), n);
        let route = d.read(0x6000 + 8 * u64::from(intid), 8).unwrap();
        if pending && enabled && grp1 && !active && route == vcpu {
            let priority = d.read(0x400 + u64::from(intid), 1).unwrap() as u8;
            out.push(Pending { intid, priority });
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any access at all is answered without a panic.
    #[test]
    fn any_access_is_handled(offset in any::<u64>(), small in 0u64..0x2_0000, size in any::<u8>(),
                             value in any::<u64>(), num_spis in 0u32..1100) {
        let mut d = Distributor::new(num_spis, 3);
        let mut rd = Redistributor::new(value, 3, true);
        for offset in [offset, small, small & !3, small & !7] {
            let _ = d.read(offset, size);
            let _ = d.write(offset, size, value);
            let _ = rd.read(offset, size);
            let _ = rd.write(offset, size, value);
            for size in [1, 4, 8] {
                let _ = d.write(offset & !7, size, value);
                let _ = rd.write(offset & !7, size, value);
            }
        }
        let _ = take_next(&mut d, &mut rd);
    }

    /// Through any sequence of register writes and device events, take_next returns exactly
    /// the best interrupt the guest-visible registers make deliverable, never a disabled,
    /// Group 0, active or misrouted one, and taking it clears its pending bit.
    #[test]
    fn take_next_matches_the_registers(ops in prop::collection::vec(op(), 1..200)) {
        let mut d = Distributor::new(SPIS, VCPUS as usize);
        let mut rds: Vec<Redistributor> =
            (0..VCPUS).map(|v| Redistributor::new(v, v as u16, v + 1 == VCPUS)).collect();
        // Start with delivery possible; the operations may turn it off again.
        w(&mut d, 0x0, 0x2);
        for rd in &mut rds {
            rw(rd, RD + 0x14, 0);
        }
        for op in ops {
            match op {
                Op::Group1Enable(on) => w(&mut d, 0x0, if on { 0x2 } else { 0 }),
                Op::Wake { vcpu, awake } => rw(&mut rds[vcpu], RD + 0x14, if awake { 0 } else { 0x2 }),
                Op::Bit { vcpu, intid, set_base, clear_base, on } => {
                    let base = if on { set_base } else { clear_base };
                    let (offset, value) = (base + 4 * u64::from(intid / 32), 1u64 << (intid % 32));
                    let _ = if intid < 32 {
                        rds[vcpu].write(SGI + offset, 4, value)
                    } else {
                        d.write(offset, 4, value)
                    };
                }
                Op::Group { vcpu, intid, group1 } => {
                    let (offset, mask) = (0x80 + 4 * u64::from(intid / 32), 1u64 << (intid % 32));
                    let update = |old: u64| if group1 { old | mask } else { old & !mask };
                    if intid < 32 {
                        let old = rr(&rds[vcpu], SGI + offset);
                        rw(&mut rds[vcpu], SGI + offset, update(old));
                    } else if let Ok(old) = d.read(offset, 4) {
                        let _ = d.write(offset, 4, update(old));
                    }
                }
                Op::Priority { vcpu, intid, priority } => {
                    let offset = 0x400 + u64::from(intid);
                    let _ = if intid < 32 {
                        rds[vcpu].write(SGI + offset, 1, priority.into())
                    } else {
                        d.write(offset, 1, priority.into())
                    };
                }
                Op::Configure { vcpu, intid, priority } => {
                    if intid < 32 {
                        enable_private(&mut rds[vcpu], intid.into(), priority);
                    } else if intid < 32 + SPIS {
                        enable_spi(&mut d, intid.into(), priority, vcpu as u64);
                    }
                }
                Op::Route { intid, vcpu } => {
                    let _ = d.write(0x6000 + 8 * u64::from(intid), 8, vcpu);
                }
                Op::DistWrite { offset, size, value } => { let _ = d.write(offset, size, value); }
                Op::RedistWrite { vcpu, offset, size, value } => {
                    let _ = rds[vcpu].write(offset, size, value);
                }
                Op::SetPending { vcpu, intid } => {
                    let private = rds[vcpu].set_pending(intid);
                    let shared = d.set_pending(intid);
                    prop_assert_eq!(private.is_ok(), intid < 32);
                    prop_assert_eq!(shared.is_ok(), (32..32 + SPIS).contains(&intid));
                }
                Op::ClearPending { vcpu, intid } => {
                    let _ = rds[vcpu].clear_pending(intid);
                    let _ = d.clear_pending(intid);
                }
                Op::Take { vcpu } => {
                    let expected = deliverable_by_registers(&d, &rds[vcpu], vcpu as u64)
                        .into_iter()
                        .min_by_key(|p| (p.priority, p.intid));
                    prop_assert_eq!(has_next(&d, &rds[vcpu]), expected.is_some());
                    let taken = take_next(&mut d, &mut rds[vcpu]);
                    prop_assert_eq!(taken, expected);
                    if let Some(p) = taken {
                        let still_pending = if p.intid < 32 {
                            bit(rr(&rds[vcpu], SGI + 0x200), p.intid)
                        } else {
                            bit(r(&d, 0x200 + 4 * u64::from(p.intid / 32)), p.intid % 32)
                        };
                        prop_assert!(!still_pending);
                    }
                }
            }
            for (v, rd) in rds.iter().enumerate() {
                let expected = deliverable_by_registers(&d, rd, v as u64)
                    .into_iter()
                    .min_by_key(|p| (p.priority, p.intid));
                prop_assert_eq!(peek_next(&d, rd), expected);
            }
        }
    }
}

#[test]
fn timer_output_is_enable_and_istatus_unmasked() {
    for ctl in 0..8u64 {
        assert_eq!(timer_output(ctl), ctl == 0b101, "{ctl:#b}");
    }
    assert!(timer_output(0b101 | 1 << 8), "other bits do not matter");
}

#[test]
fn pending_state_of_a_private_interrupt() {
    let mut rd = Redistributor::new(0, 0, true);
    assert!(!rd.is_pending(27));
    rd.set_pending(27).unwrap();
    assert!(rd.is_pending(27) && !rd.is_pending(26) && !rd.is_pending(40));
    rd.clear_pending(27).unwrap();
    assert!(!rd.is_pending(27));
}
