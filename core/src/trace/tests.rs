use super::*;
use proptest::prelude::*;
use std::vec::Vec;

#[test]
fn kinds_round_trip_and_split() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_u8(kind as u8), Some(kind));
        assert_eq!(kind.is_guest(), matches!(kind, Kind::TaskSwitch | Kind::TaskPark | Kind::TaskWake));
    }
    assert_eq!(Kind::from_u8(0), None);
    assert_eq!(Kind::from_u8(200), None);
}

#[test]
fn fault_flags_decode() {
    // EL1h with IRQs masked, a write.
    let f = FaultFlags::decode(fault_flags(0x3c5, true, false, false));
    assert_eq!(f, FaultFlags { el: 1, irqs_masked: true, write: true, instruction: false, access_flag: false });
    // EL0t, an instruction fetch taking an access flag fault.
    let f = FaultFlags::decode(fault_flags(0, false, true, true));
    assert_eq!(f, FaultFlags { el: 0, irqs_masked: false, write: false, instruction: true, access_flag: true });
}

#[test]
fn log_keeps_the_first_and_counts_the_rest() {
    let mut log = Log::new(3);
    assert_eq!((log.claim(), log.claim(), log.claim()), (Some(0), Some(1), Some(2)));
    assert_eq!(log.claim(), None);
    assert_eq!((log.len(), log.dropped()), (3, 1));
    let mut log = Log::new(4);
    assert_eq!(log.claim_many(3), (0, 3));
    assert_eq!(log.claim_many(3), (3, 1));
    assert_eq!((log.len(), log.dropped()), (4, 2));
    let mut log = Log::new(4);
    log.claim();
    log.close();
    assert_eq!(log.claim(), None);
    assert_eq!(log.claim_many(2), (1, 0));
    assert_eq!((log.len(), log.dropped()), (1, 3));
}

#[test]
fn guest_records_stay_on_the_callers_tracks() {
    let mut e = Event::new(5, Kind::TaskPark, 7);
    e.x = 3;
    e.a = 0x1_0002;
    let admitted = admit_guest(&e.encode(), 1).unwrap();
    assert_eq!(admitted.cpu, 1);
    assert_eq!((admitted.x, admitted.a, admitted.time), (3, 0x1_0002, 5));
    // A guest cannot forge the hypervisor's records.
    assert_eq!(admit_guest(&Event::new(5, Kind::PageReady, 0).encode(), 0), None);
    assert_eq!(admit_guest(&[0xff; EVENT_BYTES], 0), None);
}

#[test]
fn header_round_trip_and_layout() {
    let (offsets, guest, end) = layout(&[100, 200], 50);
    assert_eq!(offsets[0], 4096);
    assert_eq!(offsets[1], 4096 + 4096);
    assert_eq!(guest, 4096 + 4096 + 8192);
    assert_eq!(end, guest + 4096);
    let mut h = Header {
        counter_hz: 1_000_000_000,
        started: 77,
        cpus: 2,
        guest_rejected: 4,
        guest_bad_calls: 1,
        ..Header::default()
    };
    h.cpu[0] = Section { events: 100, dropped: 0, capacity: 100, offset: offsets[0] };
    h.cpu[1] = Section { events: 150, dropped: 9, capacity: 200, offset: offsets[1] };
    h.guest = Section { events: 3, dropped: 0, capacity: 50, offset: guest };
    let bytes = h.encode();
    assert_eq!(Header::decode(&bytes, Some(end)), Ok(h));
    assert_eq!(h.area_bytes(), guest + 4096);
    assert_eq!(Header::decode(&bytes, Some(guest)), Err(HeaderError::Section));
    assert_eq!(Header::decode(&[0u8; HEADER_BYTES], None), Err(HeaderError::Magic));
    assert_eq!(Header::decode(&bytes[..100], None), Err(HeaderError::Short));
}

#[test]
fn events_of_an_area() {
    let (offsets, guest, end) = layout(&[2], 2);
    let mut h = Header { cpus: 1, ..Header::default() };
    h.cpu[0] = Section { events: 2, dropped: 0, capacity: 2, offset: offsets[0] };
    h.guest = Section { events: 1, dropped: 0, capacity: 2, offset: guest };
    let mut area = std::vec![0u8; end as usize];
    area[..HEADER_BYTES].copy_from_slice(&h.encode());
    let put = |area: &mut Vec<u8>, at: u64, e: Event| {
        area[at as usize..at as usize + EVENT_BYTES].copy_from_slice(&e.encode())
    };
    put(&mut area, offsets[0], Event::new(1, Kind::Exit, 0));
    put(&mut area, offsets[0] + 32, Event::new(2, Kind::Enter, 0));
    put(&mut area, guest, Event::new(3, Kind::TaskSwitch, 0));
    let h = Header::decode(&area, Some(area.len() as u64)).unwrap();
    let all: Vec<_> = events(&h, &area).map(|(s, e)| (s, e.time)).collect();
    assert_eq!(all, std::vec![(0, 1), (0, 2), (1, 3)]);
}

#[test]
fn guest_put_ranges() {
    let ram = 0x4000_0000..0x4200_0000;
    assert_eq!(validate_put(0x4000_1000, 4096, ram.clone()), Some((1, 0)));
    assert_eq!(validate_put(0x4000_1fe0, 32, ram.clone()), Some((1, 0xfe0)));
    assert_eq!(validate_put(0x4000_1fe0, 64, ram.clone()), None, "crosses a page");
    assert_eq!(validate_put(0x4000_1010, 32, ram.clone()), None, "misaligned");
    assert_eq!(validate_put(0x4000_1000, 40, ram.clone()), None, "not whole records");
    assert_eq!(validate_put(0x4000_1000, 0, ram.clone()), None);
    assert_eq!(validate_put(0x3fff_f000, 32, ram.clone()), None, "below RAM");
    assert_eq!(validate_put(0x4200_0000, 32, ram.clone()), None, "above RAM");
    assert_eq!(validate_put(0x4000_0020, u64::MAX - 31, ram), None, "wraps");
}

proptest! {
    #[test]
    fn put_ranges_stay_in_one_page_of_ram(ipa: u64, bytes in prop_oneof![0u64..8192, any::<u64>()]) {
        let ram = 0x4000_0000u64..0x4800_0000;
        if let Some((page, offset)) = validate_put(ipa, bytes, ram.clone()) {
            prop_assert_eq!(ram.start + page * 4096 + offset, ipa);
            prop_assert!(offset + bytes <= 4096 && bytes <= 4096 && bytes > 0);
            prop_assert!(ipa + bytes <= ram.end);
        }
    }

    #[test]
    fn records_round_trip(time: u64, kind: u8, cpu: u8, aux: u16, x: u32, a: u64, b: u64) {
        let e = Event { time, kind, cpu, aux, x, a, b };
        prop_assert_eq!(Event::decode(&e.encode()), e);
    }

    #[test]
    fn any_guest_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), EVENT_BYTES), vcpu in 0u8..8) {
        let bytes: [u8; EVENT_BYTES] = bytes.try_into().unwrap();
        if let Some(e) = admit_guest(&bytes, vcpu) {
            prop_assert!(e.kind().is_some_and(Kind::is_guest));
            prop_assert_eq!(e.cpu, vcpu);
        }
    }

    #[test]
    fn header_never_panics(bytes in proptest::collection::vec(any::<u8>(), HEADER_BYTES), len in 0u64..1 << 40) {
        let mut bytes = bytes;
        // Often a valid magic and version, to get past the first checks.
        bytes[..8].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[8..16].copy_from_slice(&u64::from(VERSION).to_le_bytes());
        let _ = Header::decode(&bytes, Some(len));
    }

    #[test]
    fn log_accounts_for_every_record(capacity in 0usize..64, claims in proptest::collection::vec(0usize..8, 0..32), close_at in 0usize..40) {
        let mut log = Log::new(capacity);
        let mut asked = 0u64;
        for (i, n) in claims.iter().enumerate() {
            if i == close_at {
                log.close();
            }
            if *n == 1 {
                let _ = log.claim();
            } else {
                let (first, fit) = log.claim_many(*n);
                prop_assert!(first + fit <= capacity);
            }
            asked += *n as u64;
            prop_assert!(log.len() <= capacity);
            prop_assert_eq!(log.len() as u64 + log.dropped(), asked);
        }
    }
}
