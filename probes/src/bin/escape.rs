//! The escape probe: everything a guest kernel could use to reach the host through QEMU
//! semihosting or to forge the runner's verdict, tried from EL1.
//!
//! 1. Semihosting calls: open and write a host file (`marker=PATH` on the command line),
//!    run a host command that creates `PATH.system`, write forged `[hyp]` lines to QEMU's
//!    standard error, and exit QEMU with status 0. Each must be UNDEFINED at EL1.
//! 2. Forged lines through the UART: `[hyp] @exit`, `[hyp] @result`, after a carriage return
//!    and after a terminal escape sequence. Each must show as the guest's text.
//! 3. With `end=off` it then powers off cleanly; with `end=hang` it spins forever, so that
//!    only a runner that believed a forged `[hyp] @exit 0` would end the run before its timeout.
#![no_std]
#![no_main]

use asyncpf_probes::{exceptions, last_esr, probe, semihosting, Env};

/// Semihosting operations (Arm's semihosting specification, v2).
const SYS_OPEN: u64 = 0x01;
const SYS_WRITE: u64 = 0x05;
const SYS_WRITE0: u64 = 0x04;
const SYS_SYSTEM: u64 = 0x12;
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// SYS_OPEN mode 4: "w".
const OPEN_WRITE: u64 = 4;
/// ADP_Stopped_ApplicationExit.
const APPLICATION_EXIT: u64 = 0x20026;

const FORGED_STDERR: &[u8] = b"[hyp] @result {\"forged\":true}\n[hyp] @exit 0\n[guest] @result {\"ok\":true}\n\0";
const FORGED_UART: &[u8] =
    b"[hyp] @exit 0\n[hyp] @result {\"forged\":true}\n\r[hyp] @exit 0\n\x1b[2K\x1b[1G[hyp] @exit 0\n";

/// A NUL-terminated copy of `text` in `buf`.
fn c_string<'a>(buf: &'a mut [u8], text: &[u8]) -> &'a [u8] {
    let n = text.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&text[..n]);
    buf[n] = 0;
    &buf[..=n]
}

fn escape(env: &Env) -> ! {
    let marker = env.arg("marker").unwrap_or("/tmp/asyncpf-escape-marker").as_bytes();
    env.println(format_args!("escape probe: trying QEMU semihosting from EL1"));

    let mut path = [0u8; 256];
    let path = c_string(&mut path, marker);
    let mut command = [0u8; 300];
    let mut text = [0u8; 300];
    let n = {
        let prefix = b"touch ";
        text[..prefix.len()].copy_from_slice(prefix);
        let m = marker.len().min(200);
        text[prefix.len()..prefix.len() + m].copy_from_slice(&marker[..m]);
        let suffix = b".system";
        text[prefix.len() + m..prefix.len() + m + suffix.len()].copy_from_slice(suffix);
        prefix.len() + m + suffix.len()
    };
    let command = c_string(&mut command, &text[..n]);
    let payload = b"written by a guest\n";

    let open_block = [path.as_ptr() as u64, OPEN_WRITE, (path.len() - 1) as u64];
    let system_block = [command.as_ptr() as u64, (command.len() - 1) as u64];
    let exit_block = [APPLICATION_EXIT, 0];
    let mut calls = 0;
    let mut undefined = 0;
    // Some(x0) if the host served the call, None if it was UNDEFINED.
    let mut try_call = |name: &str, op: u64, param: u64| -> Option<u64> {
        let before = exceptions();
        let result = semihosting(op, param);
        calls += 1;
        if exceptions() > before {
            undefined += 1;
            env.println(format_args!("escape probe: {name}: UNDEFINED (ESR_EL1 {:#x})", last_esr()));
            None
        } else {
            env.println(format_args!("escape probe: {name}: served by the host, returned {result:#x}"));
            Some(result)
        }
    };
    if let Some(handle) = try_call("SYS_OPEN", SYS_OPEN, open_block.as_ptr() as u64).filter(|&h| h != u64::MAX) {
        let write_block = [handle, payload.as_ptr() as u64, payload.len() as u64];
        try_call("SYS_WRITE", SYS_WRITE, write_block.as_ptr() as u64);
    }
    try_call("SYS_SYSTEM", SYS_SYSTEM, system_block.as_ptr() as u64);
    try_call("SYS_WRITE0", SYS_WRITE0, FORGED_STDERR.as_ptr() as u64);
    try_call("SYS_EXIT_EXTENDED", SYS_EXIT_EXTENDED, exit_block.as_ptr() as u64);
    env.println(format_args!("escape probe: semihosting calls {calls}, undefined {undefined}"));

    env.println(format_args!("escape probe: forged lines through the UART follow"));
    env.write_bytes(FORGED_UART);
    if env.arg("end") == Some("hang") {
        env.println(format_args!("escape probe: done, spinning forever"));
        loop {
            core::hint::spin_loop();
        }
    }
    env.println(format_args!("escape probe: done, powering off"));
    env.system_off()
}

probe!(escape);
