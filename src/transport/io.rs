//! The I/O thread: owns the curl multi handle, starts, resumes and
//! cancels transfers on command, drives them (`perform`, drain
//! `messages`, then `poll`), and fails whatever is left when it stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use curl::multi::{Easy2Handle, Multi, MultiWaker};

use super::fork::FORK_GATE;
use super::receive::{fail_shared, finish_transfer, Shared, Sink};
use super::Cmd;
use crate::error::Error;

pub(super) fn io_thread(rx: Receiver<Cmd>, waker_tx: Sender<MultiWaker>, dead: Arc<AtomicBool>) {
    let mut multi = Multi::new();
    // No HTTP/2 multiplexing: every concurrent transfer gets a connection
    // of its own (reused one after another), as over HTTP/1.1. Parallel
    // Range requests exist to spread a blob over several TCP connections,
    // each of which a long link or a CDN limits; as streams of one HTTP/2
    // connection they would share one connection's rate (measured through
    // the WAN model: 5.8 s for the 110 MB blob, curl's single-stream time).
    let _ = multi.pipelining(false, false);
    if waker_tx.send(multi.waker()).is_err() {
        return;
    }
    let mut handles: HashMap<usize, Easy2Handle<Sink>> = HashMap::new();
    let mut states: HashMap<usize, Arc<Shared>> = HashMap::new();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        io_loop(&multi, &rx, &mut handles, &mut states)
    }));
    dead.store(true, Ordering::Release);
    let why = match run {
        Ok(()) => "the I/O thread has stopped",
        Err(_) => "internal error: the I/O thread panicked",
    };
    // Easy handles go before the multi handle.
    for (_, h) in handles.drain() {
        let _ = multi.remove2(h);
    }
    for (_, s) in states.drain() {
        fail_shared(&s, Error::new(libc::EIO, why));
    }
    // Whatever is still queued is failed too.
    while let Ok(cmd) = rx.try_recv() {
        if let Cmd::Start(_, easy) = cmd {
            fail_shared(&easy.get_ref().shared, Error::new(libc::EIO, why));
        }
    }
    drop(multi);
}

fn io_loop(
    multi: &Multi,
    rx: &Receiver<Cmd>,
    handles: &mut HashMap<usize, Easy2Handle<Sink>>,
    states: &mut HashMap<usize, Arc<Shared>>,
) {
    loop {
        let _busy = FORK_GATE.enter();
        loop {
            match rx.try_recv() {
                Ok(Cmd::Start(token, easy)) => {
                    let shared = easy.get_ref().shared.clone();
                    match multi.add2(*easy) {
                        Ok(mut h) => {
                            let _ = h.set_token(token);
                            handles.insert(token, h);
                            states.insert(token, shared);
                        }
                        Err(e) => fail_shared(
                            &shared,
                            Error::new(libc::EIO, format!("cannot start transfer: {e}")),
                        ),
                    }
                }
                Ok(Cmd::Unpause(token)) => {
                    if let Some(h) = handles.get(&token) {
                        {
                            let mut st = h.get_ref().shared.lock();
                            st.paused = false;
                            st.unpause_asked = false;
                        }
                        let _ = h.unpause_write();
                    }
                }
                Ok(Cmd::Cancel(token)) => {
                    states.remove(&token);
                    if let Some(h) = handles.remove(&token) {
                        let _ = multi.remove2(h);
                    }
                }
                Ok(Cmd::Shutdown) | Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        if multi.perform().is_err() {
            return;
        }
        let mut finished = Vec::new();
        multi.messages(|m| {
            if let (Ok(token), Some(res)) = (m.token(), m.result()) {
                finished.push((token, res));
            }
        });
        for (token, res) in finished {
            states.remove(&token);
            if let Some(h) = handles.remove(&token) {
                if let Ok(mut easy) = multi.remove2(h) {
                    finish_transfer(&mut easy, res);
                }
            }
        }
        let wait = multi
            .get_timeout()
            .ok()
            .flatten()
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        // Wait outside the gate: a fork() may happen meanwhile.
        drop(_busy);
        if multi.poll(&mut [], wait).is_err() {
            return;
        }
    }
}
