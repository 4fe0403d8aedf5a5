//! Fatal errors in the hypervisor itself: print what is known and end the machine with a
//! non-zero status, never hang silently.

use aarch64_cpu::registers::{Readable, ELR_EL2, ESR_EL2, FAR_EL2, SPSR_EL2};
use asyncpf_contract::runner::{EXIT_HYP_PANIC, HYP_LINE_PREFIX};

use crate::console::print_line_emergency;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let cpu = crate::arch::cpu_index();
    let esr = ESR_EL2.extract();
    // ESR/FAR/ELR_EL2 still describe the vCPU's last exit when the panic happened while
    // handling it, which is where a guest-triggered bug would show.
    print_line_emergency(
        HYP_LINE_PREFIX,
        format_args!(
            "PANIC on CPU {cpu} (vCPU {cpu}): {info}; last exit: EC {:#04x} ESR {:#x} FAR {:#x} ELR {:#x}",
            esr.read(ESR_EL2::EC),
            esr.get(),
            FAR_EL2.get(),
            ELR_EL2.get()
        ),
    );
    crate::shutdown::exit(EXIT_HYP_PANIC, true)
}

/// Names of the 16 vector entries, for the diagnostic.
const VECTOR_NAMES: [&str; 16] = [
    "EL2t sync",
    "EL2t IRQ",
    "EL2t FIQ",
    "EL2t SError",
    "EL2h sync",
    "EL2h IRQ",
    "EL2h FIQ",
    "EL2h SError",
    "lower A64 sync",
    "lower A64 IRQ",
    "lower A64 FIQ",
    "lower A64 SError",
    "lower A32 sync",
    "lower A32 IRQ",
    "lower A32 FIQ",
    "lower A32 SError",
];

/// An exception taken by the hypervisor from EL2 itself (or from AArch32, which cannot run):
/// always a bug. Called from the vector table with the vector index in x0.
pub extern "C" fn hyp_exception(vector: u64) -> ! {
    let esr = ESR_EL2.extract();
    let cpu = crate::arch::cpu_index();
    print_line_emergency(
        HYP_LINE_PREFIX,
        format_args!(
            "PANIC: unexpected exception '{}' in the hypervisor on CPU {cpu}: EC {:#04x} ESR {:#x} FAR {:#x} ELR {:#x} SPSR {:#x}",
            VECTOR_NAMES.get(vector as usize).copied().unwrap_or("?"),
            esr.read(ESR_EL2::EC),
            esr.get(),
            FAR_EL2.get(),
            ELR_EL2.get(),
            SPSR_EL2.get(),
        ),
    );
    crate::shutdown::exit(EXIT_HYP_PANIC, true)
}
