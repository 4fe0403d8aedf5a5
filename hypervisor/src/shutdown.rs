//! Ending the machine: the hypervisor's exit status goes to the runner as its last console line,
//! `[hyp] @exit N`, and the machine is then powered off with PSCI SYSTEM_OFF from EL2 (QEMU exits
//! with status 0).
//!
//! Why not QEMU semihosting (`hlt #0xf000`), the usual bare-metal exit channel: QEMU serves
//! semihosting itself at every exception level but EL0, without a trap to EL2, so a guest kernel
//! could use it to open, write and run things on the host and to print forged lines. QEMU is
//! therefore started without it, and the status travels on the physical UART, which only the
//! hypervisor writes (every guest line is framed by `vuart` with the `[guest] ` prefix).

use core::sync::atomic::{AtomicBool, Ordering};

use asyncpf_contract::runner::{EXIT_PREFIX, HYP_LINE_PREFIX};

use crate::console;

/// Set by the first CPU that ends the machine: the runner takes the first `@exit` line, and a
/// second CPU ending at the same time must not print another.
static ENDING: AtomicBool = AtomicBool::new(false);

/// End the whole machine with exit status `code`. `emergency`: print without waiting for the
/// console lock (the panic path, where the lock may be held by the code that failed).
pub fn exit(code: u32, emergency: bool) -> ! {
    if !ENDING.swap(true, Ordering::AcqRel) {
        let line = format_args!("{EXIT_PREFIX}{code}");
        if emergency {
            console::print_line_emergency(HYP_LINE_PREFIX, line);
        } else {
            console::print_line(HYP_LINE_PREFIX, line);
        }
        crate::arch::smc_call(asyncpf_contract::psci::SYSTEM_OFF, 0, 0, 0);
    }
    // SYSTEM_OFF does not return; another CPU that is ending the machine waits for it here.
    loop {
        crate::arch::wait_for_interrupt();
    }
}
