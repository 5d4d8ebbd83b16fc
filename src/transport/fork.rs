//! fork() while transfers run: the I/O and post threads hold no lock a
//! child would need when the process forks.

use std::sync::{Condvar, Mutex};

/// Keeps fork() from happening while the I/O or post thread holds a lock
/// a child would need: pthread_atfork's prepare handler closes the gate
/// and waits until both are outside, between two rounds of work.
pub(super) struct ForkGate {
    state: Mutex<(usize, bool)>,
    cond: Condvar,
}

pub(super) struct Busy;

impl ForkGate {
    pub(super) fn enter(&'static self) -> Busy {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.1 {
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.0 += 1;
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 -= 1;
        drop(st);
        FORK_GATE.cond.notify_all();
    }
}

pub(super) static FORK_GATE: ForkGate = ForkGate {
    state: Mutex::new((0, false)),
    cond: Condvar::new(),
};

pub(super) extern "C" fn fork_prepare() {
    let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    st.1 = true;
    while st.0 > 0 {
        st = FORK_GATE.cond.wait(st).unwrap_or_else(|e| e.into_inner());
    }
}

pub(super) extern "C" fn fork_parent() {
    let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    st.1 = false;
    drop(st);
    FORK_GATE.cond.notify_all();
}

pub(super) extern "C" fn fork_child() {
    // The child has no I/O or post thread: nobody is inside.
    let mut st = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    *st = (0, false);
}

pub(super) static ATFORK: std::sync::Once = std::sync::Once::new();
