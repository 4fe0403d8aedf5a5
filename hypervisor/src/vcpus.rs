//! The vCPUs as every CPU sees them: each one's guest MPIDR, the physical CPU it is pinned to,
//! its PSCI power state and a pending CPU_ON, and how to wake its CPU (a kick).
//!
//! This sits below every service that signals a vCPU (the vGIC, SDEI, asynchronous page faults,
//! the pager), so that they depend on it and not on the whole VM.

use alloc::vec::Vec;
use core::ops::Deref;
use core::sync::atomic::{AtomicU8, Ordering};

pub use asyncpf_core::hypercall::PowerState;

use crate::gic;
use crate::sync::Mutex;
use asyncpf_core::lockorder::Level;

/// Bits of MPIDR that hold affinity (Aff3 and Aff2..Aff0).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// The part of a vCPU that other CPUs touch.
pub struct VcpuShared {
    /// The MPIDR the guest sees on this vCPU (VMPIDR_EL2), affinity bits only.
    pub mpidr: u64,
    /// The physical CPU this vCPU is pinned to.
    pub pcpu_mpidr: u64,
    power: AtomicU8,
    /// Entry point and context id of a pending CPU_ON.
    boot: Mutex<(u64, u64)>,
}

impl VcpuShared {
    pub fn power(&self) -> PowerState {
        match self.power.load(Ordering::Acquire) {
            0 => PowerState::Off,
            1 => PowerState::OnPending,
            _ => PowerState::On,
        }
    }

    pub fn set_power(&self, state: PowerState) {
        self.power.store(state as u8, Ordering::Release);
    }

    /// The entry point and context id stored by CPU_ON.
    pub fn boot_request(&self) -> (u64, u64) {
        *self.boot.lock()
    }
}

/// The VM's vCPUs, vCPU `n` pinned to physical CPU `pcpu_mpidrs[n]`. Dereferences to the slice
/// of [`VcpuShared`], indexed by vCPU.
pub struct Vcpus(Vec<VcpuShared>);

/// The physical CPU (its index in the machine's CPU list) that runs vCPU `vcpu`. vCPUs are pinned
/// one to one, vCPU `n` on CPU `n`: `main.rs` starts each CPU's vCPU, [`Vcpus::new`] records the
/// CPUs in that order, and the pager turns the vCPUs it wakes into CPUs with this.
pub const fn pcpu_of(vcpu: usize) -> usize {
    vcpu
}

/// The vCPU MPIDR for vCPU `index`: Aff0 in 0..16 (GICv3 SGI target lists cover 16 CPUs per
/// Aff1 value), Aff1 above.
pub fn vcpu_mpidr(index: usize) -> u64 {
    ((index as u64 / 16) << 8) | (index as u64 % 16)
}

impl Vcpus {
    /// One vCPU per entry of `pcpu_mpidrs` (the MPIDRs of physical CPUs 0, 1, ..., see
    /// [`pcpu_of`]), all off.
    pub fn new(pcpu_mpidrs: &[u64]) -> Self {
        Vcpus(
            pcpu_mpidrs
                .iter()
                .enumerate()
                .map(|(i, &pcpu_mpidr)| VcpuShared {
                    mpidr: vcpu_mpidr(i),
                    pcpu_mpidr,
                    power: AtomicU8::new(PowerState::Off as u8),
                    boot: Mutex::new(Level::VcpuBoot, (0, 0)),
                })
                .collect(),
        )
    }

    /// The vCPU whose MPIDR affinity is `mpidr`.
    pub fn by_mpidr(&self, mpidr: u64) -> Option<usize> {
        self.0.iter().position(|v| v.mpidr == mpidr & MPIDR_AFFINITY_MASK)
    }

    /// PSCI CPU_ON: record the entry point and wake the target's physical CPU.
    pub fn power_on(&self, target: usize, entry: u64, context: u64) -> Result<(), PowerState> {
        let vcpu = &self.0[target];
        let mut boot = vcpu.boot.lock();
        match vcpu.power() {
            PowerState::Off => {
                *boot = (entry, context);
                vcpu.set_power(PowerState::OnPending);
                drop(boot);
                gic::kick(vcpu.pcpu_mpidr);
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Wake the physical CPU of vCPU `target` so that it looks at its pending interrupts.
    pub fn kick(&self, target: usize) {
        gic::kick(self.0[target].pcpu_mpidr);
    }
}

impl Deref for Vcpus {
    type Target = [VcpuShared];
    fn deref(&self) -> &[VcpuShared] {
        &self.0
    }
}

/// SDEI's view of the vCPUs: routing by affinity.
impl asyncpf_core::sdei::GuestState for Vcpus {
    fn vcpu_by_mpidr(&self, affinity: u64) -> Option<usize> {
        self.by_mpidr(affinity)
    }
}
