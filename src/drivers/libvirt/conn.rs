//! The one libvirt connection a [`LibvirtVms`](super::LibvirtVms) holds, libvirt's event loop,
//! and the lifecycle callbacks that tell the agent to look again.
//!
//! libvirt calls block. Every call runs on a blocking thread (`spawn_blocking`) against a
//! shared [`Conn`]: libvirt connections are thread-safe, so a long call (a migration) does not
//! hold up a short one (an observation). The connection is opened on first use and kept for
//! the driver's lifetime; when it breaks (the daemon restarted, keepalive timed out, the
//! remote end closed it) it is dropped and the next call opens a new one.
//!
//! Events: libvirt's default event loop implementation is registered once per process and run
//! on a thread of its own (`libvirt-events`, for the process's lifetime); it carries the
//! remote driver's keepalive and the domain lifecycle callbacks. Each connection registers
//! one lifecycle callback for all domains and one close callback; both bump a counter in a
//! `tokio::sync::watch` channel, which an agent awaits to re-observe at once
//! ([`LibvirtVms::events`](super::LibvirtVms::events)).

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use virt::connect::Connect;
use virt::sys;

/// Where lifecycle events and connection closes are announced.
pub(super) struct Signals {
    pub(super) events: watch::Sender<u64>,
}

impl Signals {
    pub(super) fn new() -> Arc<Signals> {
        Arc::new(Signals {
            events: watch::channel(0).0,
        })
    }
    fn bump(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// What one connection's close callback needs: whom to tell, and a flag to mark it broken.
struct CloseState {
    signals: Arc<Signals>,
    broken: AtomicBool,
}

/// One open libvirt connection with its callbacks. Closed (callbacks first) when the last
/// call using it finishes after it was replaced, or when the driver is dropped.
pub(super) struct Conn {
    pub(super) conn: Connect,
    lifecycle: Option<c_int>,
    close: Option<Arc<CloseState>>,
}

impl Conn {
    /// Whether the connection still works: not closed by the other end, and alive as far as
    /// libvirt knows (for a local driver, always).
    pub(super) fn alive(&self) -> bool {
        if self
            .close
            .as_ref()
            .is_some_and(|c| c.broken.load(Ordering::SeqCst))
        {
            return false;
        }
        self.conn.is_alive().unwrap_or(false)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let ptr = self.conn.as_ptr();
        // SAFETY: `ptr` is this struct's open connection; the ids and callbacks are the ones
        // registered on it in `open`. libvirt frees the opaque data through the free callbacks.
        unsafe {
            if let Some(id) = self.lifecycle {
                sys::virConnectDomainEventDeregisterAny(ptr, id);
            }
            if self.close.is_some() {
                sys::virConnectUnregisterCloseCallback(ptr, Some(on_close));
            }
        }
        if let Err(e) = self.conn.close() {
            tracing::debug!("libvirt: closing the connection: {e}");
        }
    }
}

/// The driver's connection slot: one [`Conn`] at a time, opened on demand.
pub(super) struct Link {
    uri: String,
    keepalive: Option<(i32, u32)>,
    slot: Mutex<Option<Arc<Conn>>>,
    pub(super) signals: Arc<Signals>,
}

impl Link {
    pub(super) fn new(uri: String, keepalive: Option<(i32, u32)>) -> Link {
        Link {
            uri,
            keepalive,
            slot: Mutex::new(None),
            signals: Signals::new(),
        }
    }

    pub(super) fn uri(&self) -> &str {
        &self.uri
    }

    /// The current connection, opening one if there is none or the last one broke. Blocking.
    pub(super) fn get(&self) -> Result<Arc<Conn>, virt::error::Error> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            if !c
                .close
                .as_ref()
                .is_some_and(|s| s.broken.load(Ordering::SeqCst))
            {
                return Ok(c.clone());
            }
            tracing::warn!(uri = %self.uri, "libvirt connection closed; reconnecting");
        }
        *slot = None;
        let c = Arc::new(self.open()?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// After a failed call: forget the connection if it no longer works, so the next call
    /// reconnects. Returns whether it was dropped.
    pub(super) fn check(&self, conn: &Arc<Conn>) -> bool {
        if conn.alive() {
            return false;
        }
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            tracing::warn!(uri = %self.uri, "libvirt connection is dead; the next call reconnects");
            *slot = None;
        }
        true
    }

    fn open(&self) -> Result<Conn, virt::error::Error> {
        let events = event_loop();
        let conn = Connect::open(Some(&self.uri))?;
        let mut c = Conn {
            conn,
            lifecycle: None,
            close: None,
        };
        if let Err(e) = events {
            tracing::warn!(
                "libvirt event loop unavailable ({e}); changes are seen by polling only"
            );
            return Ok(c);
        }
        if let Some((interval, count)) = self.keepalive {
            // Local drivers have no keepalive; that is not an error worth reporting.
            let _ = c.conn.set_keep_alive(interval, count);
        }
        let ptr = c.conn.as_ptr();
        // SAFETY: the callback matches libvirt's lifecycle callback signature; libvirt calls
        // it through the generic type, as its own VIR_DOMAIN_EVENT_CALLBACK macro does. The
        // opaque pointer is an `Arc<Signals>` released by `free_signals`.
        let id = unsafe {
            let cb: unsafe extern "C" fn(
                sys::virConnectPtr,
                sys::virDomainPtr,
                c_int,
                c_int,
                *mut c_void,
            ) -> c_int = on_lifecycle;
            let generic = std::mem::transmute::<
                unsafe extern "C" fn(
                    sys::virConnectPtr,
                    sys::virDomainPtr,
                    c_int,
                    c_int,
                    *mut c_void,
                ) -> c_int,
                unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
            >(cb);
            let opaque = Arc::into_raw(self.signals.clone()) as *mut c_void;
            let id = sys::virConnectDomainEventRegisterAny(
                ptr,
                std::ptr::null_mut(),
                sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
                Some(generic),
                opaque,
                Some(free_signals),
            );
            if id < 0 {
                // libvirt does not call the free callback when registration fails.
                drop(Arc::from_raw(opaque as *const Signals));
            }
            id
        };
        if id >= 0 {
            c.lifecycle = Some(id);
        } else {
            tracing::warn!(
                uri = %self.uri,
                "libvirt lifecycle events unavailable ({}); changes are seen by polling only",
                virt::error::Error::last_error()
            );
        }
        let state = Arc::new(CloseState {
            signals: self.signals.clone(),
            broken: AtomicBool::new(false),
        });
        // SAFETY: as above; the opaque pointer is an `Arc<CloseState>` released by
        // `free_close`. Only remote connections support close callbacks.
        let ok = unsafe {
            let opaque = Arc::into_raw(state.clone()) as *mut c_void;
            let r =
                sys::virConnectRegisterCloseCallback(ptr, Some(on_close), opaque, Some(free_close));
            if r < 0 {
                drop(Arc::from_raw(opaque as *const CloseState));
            }
            r >= 0
        };
        if ok {
            c.close = Some(state);
        }
        Ok(c)
    }
}

/// Register libvirt's default event loop and start the thread that runs it, once per process.
fn event_loop() -> Result<(), String> {
    static LOOP: OnceLock<Result<(), String>> = OnceLock::new();
    LOOP.get_or_init(|| {
        // libvirt prints every error to stderr by default; the driver reports them itself.
        virt::error::clear_error_callback();
        virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::warn!("libvirt event loop: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .clone()
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: `opaque` is the `Arc<Signals>` registered with this callback, alive until
    // `free_signals`; the domain name is borrowed from `dom` for the duration of the call.
    let signals = &*(opaque as *const Signals);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let name = sys::virDomainGetName(dom);
        let name = if name.is_null() {
            "?".into()
        } else {
            CStr::from_ptr(name).to_string_lossy()
        };
        tracing::debug!(domain = %name, event, detail, "libvirt lifecycle event");
    }
    signals.bump();
    0
}

unsafe extern "C" fn free_signals(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Arc::into_raw` in `Link::open`.
    drop(Arc::from_raw(opaque as *const Signals));
}

unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Arc<CloseState>` registered with this callback.
    let state = &*(opaque as *const CloseState);
    state.broken.store(true, Ordering::SeqCst);
    tracing::warn!(reason, "libvirt connection closed by the other end");
    state.signals.bump();
}

unsafe extern "C" fn free_close(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Arc::into_raw` in `Link::open`.
    drop(Arc::from_raw(opaque as *const CloseState));
}
