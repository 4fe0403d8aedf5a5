//! The first instructions: every physical CPU enters here at EL2 with its MMU off, gets its
//! own stack and jumps to Rust. CPU 0 comes from QEMU's ELF loader at `_start`; the others are
//! started by CPU 0 through PSCI CPU_ON at `secondary_entry` with their index as context id.

use core::arch::global_asm;

/// Most physical CPUs the hypervisor supports (one stack each).
pub const MAX_CPUS: usize = asyncpf_core::options::MAX_CPUS;
/// Bytes of stack per physical CPU.
pub const STACK_BYTES: usize = 64 * 1024;

/// The stacks, in .bss. Only touched through `sp` by the entry code below.
#[repr(C, align(16))]
pub struct Stacks([u8; STACK_BYTES * MAX_CPUS]);

#[unsafe(no_mangle)]
static mut HYP_STACKS: Stacks = Stacks([0; STACK_BYTES * MAX_CPUS]);

global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    // Mask every exception while the hypervisor has no vectors yet.
    "    msr daifset, #0xf",
    // Zero .bss: CPU 0 only, before any Rust code runs.
    "    adrp x0, __bss_start",
    "    add x0, x0, :lo12:__bss_start",
    "    adrp x1, __bss_end",
    "    add x1, x1, :lo12:__bss_end",
    "1:  cmp x0, x1",
    "    b.hs 2f",
    "    stp xzr, xzr, [x0], #16",
    "    b 1b",
    "2:  mov x19, #0",
    "    b 3f",
    ".global secondary_entry",
    "secondary_entry:",
    "    msr daifset, #0xf",
    "    mov x19, x0",
    // sp = HYP_STACKS + (index + 1) * STACK_BYTES
    "3:  adrp x0, HYP_STACKS",
    "    add x0, x0, :lo12:HYP_STACKS",
    "    add x1, x19, #1",
    "    mov x2, #{stack_bytes}",
    "    madd x0, x1, x2, x0",
    "    mov sp, x0",
    "    mov x0, x19",
    "    bl {rust_entry}",
    "4:  wfe",
    "    b 4b",
    stack_bytes = const STACK_BYTES,
    rust_entry = sym crate::rust_entry,
);

unsafe extern "C" {
    /// Entry point for CPUs started with PSCI CPU_ON (x0 = CPU index).
    pub fn secondary_entry();
}
