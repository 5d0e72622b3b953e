//! `iceoryx2-loan` (cargo feature `iceoryx2`, off by default): iceoryx2 publish-subscribe
//! between the two benchmark processes, used the zero-copy way. The publisher (the producer's
//! child) loans each sample with `loan_slice_uninit`, writes every byte of it in place and sends
//! it; the subscriber (the parent) receives it and reads and checks every byte in place through
//! `payload()` (see [`crate::inplace`] for the pattern).
//!
//! The service does not lose samples and is measured like the other rows: safe overflow off,
//! the publisher retrying until delivered (`BackpressureStrategy::RetryUntilDelivered`), no
//! history, a subscriber buffer of as many samples as the other rings hold messages of the same
//! size (at least 2), one publisher and one subscriber. The subscriber polls `receive` (the
//! usual way; iceoryx2 wakes no sleeper without an event service), checking the watchdog as it
//! spins.
//!
//! Run: `cargo run --release -p multiproc-bench --features iceoryx2 -- --bench goals`, or any
//! throughput run, e.g. `... --features iceoryx2 -- --bench throughput --only iceoryx2-loan`.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::inplace::{LoanRx, LoanTx, Loaned, Received};

type Svc = ipc::Service;
type Port = Publisher<Svc, [u64], ()>;
type Factory = iceoryx2::service::port_factory::publish_subscribe::PortFactory<Svc, [u64], ()>;

/// The producer's end: the service's name; the node and publisher are made in the child
/// ([`LoanTx::attach`]), never inherited across `fork`.
pub struct Pub {
    name: String,
    words: usize,
    slots: usize,
    port: Option<(Node<Svc>, Port)>,
}

/// The consumer's end: made in the parent before the fork, so no sample is sent before the
/// subscriber exists. A copy inherited by a child is never torn down there (the parent owns
/// the node, the service and the subscriber).
pub struct Sub {
    owner: libc::pid_t,
    inner: ManuallyDrop<SubInner>,
}

struct SubInner {
    subscriber: Subscriber<Svc, [u64], ()>,
    _service: Factory,
    _node: Node<Svc>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        // SAFETY: getpid has no preconditions.
        if unsafe { libc::getpid() } == self.owner {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
        }
    }
}

fn node() -> Result<Node<Svc>, String> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(|e| format!("iceoryx2 node: {e:?}"))
}

fn service(node: &Node<Svc>, name: &str, slots: usize) -> Result<Factory, String> {
    let name: ServiceName = name
        .try_into()
        .map_err(|e| format!("iceoryx2 service name: {e:?}"))?;
    node.service_builder(&name)
        .publish_subscribe::<[u64]>()
        .enable_safe_overflow(false)
        .history_size(0)
        .subscriber_max_buffer_size(slots)
        .subscriber_max_borrowed_samples(1)
        .max_publishers(1)
        .max_subscribers(1)
        .open_or_create()
        .map_err(|e| format!("iceoryx2 service: {e:?}"))
}

/// Services made by this process so far (each measurement has its own).
static SERVICES: AtomicU64 = AtomicU64::new(0);

/// A fresh service for messages of `size` bytes (a multiple of 8): the producer's end, and the
/// consumer's end with its subscriber.
pub fn pair(size: usize) -> Result<(Pub, Sub), String> {
    if let Some(why) = crate::inplace::unsupported(size) {
        return Err(why);
    }
    let k = SERVICES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    let owner = unsafe { libc::getpid() };
    let name = format!("multiproc-bench/{owner}/{k}");
    let slots = (crate::mech::ring_bytes(size) / size).max(2);
    let node = node()?;
    let service = service(&node, &name, slots)?;
    let subscriber = service
        .subscriber_builder()
        .buffer_size(slots)
        .create()
        .map_err(|e| format!("iceoryx2 subscriber: {e:?}"))?;
    Ok((
        Pub {
            name,
            words: size / 8,
            slots,
            port: None,
        },
        Sub {
            owner,
            inner: ManuallyDrop::new(SubInner {
                subscriber,
                _service: service,
                _node: node,
            }),
        },
    ))
}

impl LoanTx for Pub {
    fn attach(&mut self) -> Result<(), String> {
        let node = node()?;
        let publisher = service(&node, &self.name, self.slots)?
            .publisher_builder()
            .initial_max_slice_len(self.words)
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| format!("iceoryx2 publisher: {e:?}"))?;
        self.port = Some((node, publisher));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        // The child leaves with `_exit`: drop the publisher and the node here, or their shared
        // memory would outlive the run.
        self.port = None;
        Ok(())
    }

    fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(Loaned<'_>)) -> Result<(), String> {
        let Some((_, publisher)) = &self.port else {
            return Err("iceoryx2: the publisher was not attached".into());
        };
        if len != self.words * 8 {
            return Err(format!(
                "iceoryx2: {len} bytes on a service of {}",
                self.words * 8
            ));
        }
        let mut sample = publisher
            .loan_slice_uninit(self.words)
            .map_err(|e| format!("iceoryx2 loan: {e:?}"))?;
        let payload = sample.payload_mut();
        let (p, n) = (payload.as_mut_ptr().cast::<u8>(), payload.len() * 8);
        // SAFETY: the loaned payload is `n` writable bytes (a multiple of 8) that iceoryx2 gives
        // this process alone until `send`; `fill` writes all of them.
        fill(unsafe { Loaned::new((p, n), (p, 0)) });
        // SAFETY: `fill` initialised every element (every word of the payload).
        let sample = unsafe { sample.assume_init() };
        sample
            .send()
            .map(drop)
            .map_err(|e| format!("iceoryx2 send: {e:?}"))
    }
}

impl LoanRx for Sub {
    fn recv_with(
        &mut self,
        read: &mut dyn FnMut(Received<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut spins = 0u32;
        loop {
            match self.inner.subscriber.receive() {
                Ok(Some(sample)) => {
                    let payload = sample.payload();
                    let (p, n) = (payload.as_ptr().cast::<u8>(), payload.len() * 8);
                    // SAFETY: iceoryx2 lends the received payload, `n` bytes, read-only until
                    // the sample drops (after `read`).
                    return read(unsafe { Received::new((p, n), (p, 0)) });
                }
                Ok(None) => {
                    std::hint::spin_loop();
                    spins = spins.wrapping_add(1);
                    if spins % 1024 == 0 && crate::sys::timed_out() {
                        return Err("iceoryx2: no sample before the watchdog fired".into());
                    }
                }
                Err(e) => return Err(format!("iceoryx2 receive: {e:?}")),
            }
        }
    }
}
