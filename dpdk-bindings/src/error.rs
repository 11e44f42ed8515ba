//! DPDK errors: the failing call, the errno (rte_errno or a negative return
//! code) and DPDK's own message for it (`rte_strerror`).

use std::ffi::CStr;
use std::fmt;

use crate::ffi;

/// A failed DPDK call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError {
    call: &'static str,
    errno: i32,
    message: String,
}

/// Result of a DPDK call.
pub type Result<T> = std::result::Result<T, DpdkError>;

/// DPDK's message for an errno value (covers DPDK's own codes such as
/// `E_RTE_SECONDARY` as well as libc ones).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a
    // NUL-terminated string (static or in a thread-local buffer) that stays
    // valid until the next call on this thread; we copy it out immediately.
    let msg = unsafe { CStr::from_ptr(ffi::rte_strerror(errno)) };
    msg.to_string_lossy().into_owned()
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int through the shim; no preconditions.
    unsafe { ffi::ferrovs_rte_errno() }
}

impl DpdkError {
    /// An error whose code is in `rte_errno` (calls returning -1 or NULL).
    pub(crate) fn from_rte_errno(call: &'static str) -> Self {
        Self::from_errno(call, rte_errno())
    }

    /// An error from a `-errno` return value (most ethdev calls).
    pub(crate) fn from_ret(call: &'static str, ret: i32) -> Self {
        Self::from_errno(call, ret.saturating_abs())
    }

    pub(crate) fn from_errno(call: &'static str, errno: i32) -> Self {
        DpdkError {
            call,
            errno,
            message: strerror(errno),
        }
    }

    /// An error with an explicit message (argument checks done on the Rust side).
    pub(crate) fn new(call: &'static str, errno: i32, message: impl Into<String>) -> Self {
        DpdkError {
            call,
            errno,
            message: message.into(),
        }
    }

    /// Adds context after DPDK's message.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{}; {context}", self.message);
        self
    }

    /// The DPDK function (or wrapper step) that failed.
    pub fn call(&self) -> &'static str {
        self.call
    }

    /// The errno value (positive).
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// DPDK's message for the errno, plus any context.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (errno {})", self.call, self.message, self.errno)
    }
}

impl std::error::Error for DpdkError {}

/// Turns a DPDK `-errno` style return code into a result.
pub(crate) fn check(call: &'static str, ret: i32) -> Result<i32> {
    if ret < 0 {
        Err(DpdkError::from_ret(call, ret))
    } else {
        Ok(ret)
    }
}
