//! Ringing the disk's doorbell, and acknowledging its interrupt, without the pager's lock.
//!
//! Both are MMIO accesses, and under QEMU's TCG every MMIO access leaves the vCPU thread for
//! the device model (the notify even processes the request there), so they are the slowest
//! part of a request. The pager calls into the driver under its lock; to keep these accesses
//! out of it:
//! * [`DeferredNotify`] wraps the transport that `virtio-drivers` drives and only records a
//!   queue notification ([`Transport::notify`]); whoever releases the lock rings it with
//!   [`DeviceRegisters::notify_queue`].
//! * [`DeviceRegisters::acknowledge_interrupt`] reads and acknowledges InterruptStatus.
//!
//! virtio 1.2 (4.2.2) gives these registers fixed offsets, and allows them to be accessed at
//! any time; the driver's own accesses (queue setup, status) happen only during probing.

use alloc::sync::Arc;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// QueueNotify: write a queue index to notify the device (virtio 1.2, 4.2.2).
const QUEUE_NOTIFY: usize = 0x050;
/// InterruptStatus: bit 0, used buffer notification; bit 1, configuration change.
const INTERRUPT_STATUS: usize = 0x060;
/// InterruptACK: write the bits of InterruptStatus that were handled.
const INTERRUPT_ACK: usize = 0x064;

/// The notification and interrupt registers of one virtio-mmio device, usable from any CPU.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRegisters {
    base: usize,
}

impl DeviceRegisters {
    /// # Safety
    /// `base` must be the register window of a virtio-mmio device (version 2), identity-mapped
    /// as device memory for as long as this value is used.
    pub unsafe fn new(base: u64) -> Self {
        DeviceRegisters { base: base as usize }
    }

    /// Tell the device that queue `queue` has new available buffers.
    ///
    /// `virtio-drivers` publishes the available ring with a `fence` and a release store of its
    /// index (`dmb ish`-class ordering, which a device outside the inner-shareable domain is
    /// not promised to observe) and puts no barrier before the notify itself; so this one does,
    /// as Linux's `writel` does: the device sees the ring before the doorbell, whichever CPU
    /// queued the requests (this CPU saw them through the doorbell flag's acquire).
    pub fn notify_queue(&self, queue: u16) {
        crate::arch::dmb_oshst();
        // SAFETY: a register of the window `new`'s contract guarantees; a write of a queue
        // index only makes the device look at that queue's available ring.
        unsafe { write_volatile((self.base + QUEUE_NOTIFY) as *mut u32, u32::from(queue)) };
    }

    /// Acknowledge whatever InterruptStatus shows (lowering the device's interrupt line).
    pub fn acknowledge_interrupt(&self) {
        // SAFETY: registers of the window `new`'s contract guarantees; reading the status has
        // no side effect, and acknowledging it only clears those status bits.
        unsafe {
            let status = read_volatile((self.base + INTERRUPT_STATUS) as *const u32);
            if status != 0 {
                write_volatile((self.base + INTERRUPT_ACK) as *mut u32, status);
            }
        }
    }
}

/// A transport whose queue notifications are recorded in a flag shared with its owner (the
/// driver owns the transport and does not lend it out), to be rung later (see the module).
pub struct DeferredNotify<T> {
    inner: T,
    pending: Arc<AtomicBool>,
}

impl<T> DeferredNotify<T> {
    /// Wrap `inner`; `pending` is set whenever the driver asks for a notification.
    pub fn new(inner: T, pending: Arc<AtomicBool>) -> Self {
        DeferredNotify { inner, pending }
    }
}

impl<T: Transport> Transport for DeferredNotify<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    /// Recorded only: the device has a single queue, rung by [`DeviceRegisters::notify_queue`].
    fn notify(&mut self, _queue: u16) {
        self.pending.store(true, Ordering::Release);
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.inner.queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<V: IntoBytes + Immutable>(&mut self, offset: usize, value: V) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
