//! EAL initialisation: once per process, with the arguments exactly as a user
//! writes them for `dpdk-testpmd` (everything before `--`).

use std::ffi::{c_char, c_int, CString};
use std::sync::Mutex;

use crate::error::{rte_errno, DpdkError, Result};
use crate::ffi;

/// The first CPU this process may run on (from `/proc/self/status`), so an
/// `-l` argument names a core the EAL can pin to even inside a restricted
/// cpuset; 0 if it cannot be read.
pub fn first_allowed_cpu() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|list| list.trim().split([',', '-']).next()?.parse().ok())
        .unwrap_or(0)
}

/// EAL arguments for running on virtual devices only (tests, CI, demos):
/// one core, no hugepages, no PCI scan, no telemetry or shared config, the
/// private `file_prefix`, EAL logs at warning, then `--vdev` for each of
/// `vdevs`.
pub fn vdev_only_args(file_prefix: &str, vdevs: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "-l",
        &first_allowed_cpu().to_string(),
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-telemetry",
        "--no-shconf",
        "--file-prefix",
        file_prefix,
        "--log-level",
        "lib.eal:warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for v in vdevs {
        args.push("--vdev".into());
        args.push(v.to_string());
    }
    args
}

/// Proof that the EAL is initialised in this process. Every other wrapper
/// that needs the EAL takes one, so it cannot be used before init.
#[derive(Debug, Clone, Copy)]
pub struct Eal {
    _private: (),
}

/// `Some` once `rte_eal_init` succeeded; a failed init leaves `None`.
static STATE: Mutex<Option<Eal>> = Mutex::new(None);

/// Program name placed in `argv[0]` (DPDK's log prefix and usage text).
const PROGRAM: &str = "ferrovs";

impl Eal {
    /// Initialises the EAL with `args` (without the program name), e.g.
    /// `["-l", "0", "--no-huge", "-m", "256", "--no-pci", "--vdev", "net_null0"]`.
    ///
    /// Only one successful init per process: later calls fail with `EALREADY`
    /// (use [`Eal::get`]). DPDK permits retrying after an argument error; other
    /// failures leave the process unable to init again (DPDK's own rule).
    pub fn init<I, S>(args: I) -> Result<Eal>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<String> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new(PROGRAM).expect("no NUL in program name"));
        for a in &args {
            owned.push(CString::new(a.as_str()).map_err(|_| {
                DpdkError::new(
                    "rte_eal_init",
                    libc::EINVAL,
                    format!("EAL argument {a:?} contains a NUL byte"),
                )
            })?);
        }
        let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_some() {
            return Err(DpdkError::new(
                "rte_eal_init",
                libc::EALREADY,
                "the EAL is already initialised in this process (it initialises once; use Eal::get)",
            ));
        }
        // DPDK may keep pointers into argv (and getopt permutes the array), so
        // the strings and the array live for the rest of the process.
        let owned: &'static mut [CString] = Vec::leak(owned);
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        let argv: &'static mut [*mut c_char] = Vec::leak(argv);
        let argc = c_int::try_from(owned.len())
            .map_err(|_| DpdkError::new("rte_eal_init", libc::E2BIG, "too many EAL arguments"))?;

        // SAFETY: argv holds argc valid NUL-terminated strings followed by a
        // NULL, all leaked so they outlive any pointer DPDK keeps. The STATE
        // lock serialises init calls from this crate.
        let ret = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let errno = rte_errno();
            return Err(DpdkError::from_errno("rte_eal_init", errno)
                .context(format_args!("EAL arguments: {args:?}")));
        }
        let eal = Eal { _private: () };
        *state = Some(eal);
        Ok(eal)
    }

    /// The EAL handle if this process initialised it.
    pub fn get() -> Option<Eal> {
        *STATE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The NUMA socket of the calling thread (`SOCKET_ID_ANY` for non-EAL threads).
    pub fn socket_id(&self) -> i32 {
        // SAFETY: rte_socket_id reads per-thread EAL state; the EAL is initialised.
        unsafe { ffi::rte_socket_id() as i32 }
    }

    /// The calling thread's lcore id (`None` for threads EAL does not manage).
    pub fn lcore_id(&self) -> Option<u32> {
        // SAFETY: reads a thread-local through the shim; the EAL is initialised.
        let id = unsafe { ffi::ferrovs_rte_lcore_id() };
        (id < ffi::RTE_MAX_LCORE).then_some(id)
    }

    /// Registers the calling (non-EAL) thread with the EAL, which gives it
    /// an lcore id: mempool caches, which only lcores have, then serve its
    /// mbuf allocations and frees without touching the shared ring. A thread
    /// that already has an lcore id gets `Ok` with nothing to undo. The
    /// registration ends when the returned guard drops, on this thread.
    pub fn register_thread(&self) -> Result<ThreadRegistration> {
        if self.lcore_id().is_some() {
            return Ok(ThreadRegistration {
                registered: false,
                _not_send: std::marker::PhantomData,
            });
        }
        // SAFETY: rte_thread_register only touches EAL state for the calling
        // thread; the EAL is initialised (an Eal exists).
        let rc = unsafe { ffi::rte_thread_register() };
        if rc != 0 {
            return Err(DpdkError::from_rte_errno("rte_thread_register"));
        }
        Ok(ThreadRegistration {
            registered: true,
            _not_send: std::marker::PhantomData,
        })
    }

    /// Number of lcores the EAL was started with.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: reads EAL configuration; the EAL is initialised.
        unsafe { ffi::rte_lcore_count() }
    }
}

/// A thread's registration with the EAL ([`Eal::register_thread`]); ends
/// when dropped (on the thread that registered: the guard is not `Send`).
#[derive(Debug)]
pub struct ThreadRegistration {
    registered: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: this thread registered itself (register_thread) and the
            // guard cannot leave the thread, so it unregisters the same thread.
            unsafe { ffi::rte_thread_unregister() }
        }
    }
}
