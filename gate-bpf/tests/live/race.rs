//! The gate decides on the instructions the verifier checks, not on a user buffer another thread can rewrite
//! (issue 16). One thread loads a kprobe program whose call is flipped, by another thread, between a harmless
//! helper (`get_prandom_u32`) and one the policy denies (`send_signal`), as fast as it can. Both forms pass the
//! verifier, so a load of the denied form could only be refused by the gate: no load may ever succeed holding
//! the denied call. What the kernel loaded is read back (its translated instructions) and compared with the
//! harmless form loaded alone. On 6.9+ the scan runs at `lsm/bpf_prog_load`; on 6.1 at `fentry/bpf_check`, with
//! the decision at `lsm/bpf_prog`: the same property for both designs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bpfgate_test_support::insn::{call_helper, exit, mov_imm, Insn};
use libbpf_rs::libbpf_sys;

use super::gate::{no_signals_policy, Live};
use super::live;

const GET_PRANDOM_U32: i32 = 7;
const SEND_SIGNAL: i32 = 109;
/// The instruction the flipper rewrites (the call).
const FLIPPED: usize = 1;

fn insns(helper: i32) -> [Insn; 4] {
    [mov_imm(1, 0), call_helper(helper), mov_imm(0, 0), exit()]
}

fn word(i: Insn) -> u64 {
    u64::from_le_bytes(i.to_bytes(true))
}

/// Loads the program in `buf` (4 instructions, in the shared buffer) as a kprobe program: its fd or the errno.
fn load(buf: &[AtomicU64; 4]) -> Result<i32, i32> {
    let name = c"bpfgate_race";
    // SAFETY: buf is 4 live 8-byte instructions (AtomicU64 has u64's layout, Insn's size); the kernel copies them
    // (a concurrent store changes which form it copies, never its validity); null opts means defaults.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_KPROBE,
            name.as_ptr(),
            c"GPL".as_ptr(),
            buf.as_ptr().cast(),
            4,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        Err(-fd)
    } else {
        Ok(fd)
    }
}

/// The translated instructions of program `fd` (the verifier's rewrite: a helper call holds its function).
fn xlated(fd: i32) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut info = libbpf_sys::bpf_prog_info {
        xlated_prog_len: buf.len() as u32,
        xlated_prog_insns: buf.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = size_of_val(&info) as u32;
    // SAFETY: the kernel writes at most len bytes into info and xlated_prog_len bytes into buf.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    assert_eq!(rc, 0, "reading the program's instructions");
    buf.truncate(info.xlated_prog_len as usize);
    buf
}

fn close(fd: i32) {
    // SAFETY: fd is a program fd this test owns and closes once.
    unsafe { libc::close(fd) };
}

#[test]
fn gate_race_user_buffer_rewritten_during_loads() {
    let Some(_guard) = live("gate_race_user_buffer_rewritten_during_loads") else { return };
    let harmless = insns(GET_PRANDOM_U32).map(word);
    let denied = insns(SEND_SIGNAL).map(word);
    let buf: [AtomicU64; 4] = harmless.map(AtomicU64::new);
    let mut g = Live::new();
    g.install(&no_signals_policy());

    // Each form alone: the harmless one loads (its translation is the reference), the denied one is refused.
    let fd = load(&buf).expect("the harmless form loads");
    let reference = xlated(fd);
    close(fd);
    buf[FLIPPED].store(denied[FLIPPED], Ordering::SeqCst);
    assert_eq!(load(&buf), Err(libc::EPERM), "the denied form alone is refused");
    buf[FLIPPED].store(harmless[FLIPPED], Ordering::SeqCst);

    let stop = AtomicBool::new(false);
    let (mut attempted, mut allowed, mut refused) = (0u64, 0u64, 0u64);
    let mut wrong = Vec::new();
    let started = Instant::now();
    let flips = std::thread::scope(|s| {
        let flipper = s.spawn(|| {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let next = if flips.is_multiple_of(2) { denied[FLIPPED] } else { harmless[FLIPPED] };
                buf[FLIPPED].store(next, Ordering::Relaxed);
                flips += 1;
            }
            flips
        });
        // Until both outcomes were seen often enough and the buffer flipped tens of thousands of times, within a
        // time bound that keeps the test short under TCG.
        let deadline = started + Duration::from_secs(20);
        while Instant::now() < deadline && (attempted < 2000 || allowed < 50 || refused < 50) {
            attempted += 1;
            match load(&buf) {
                Ok(fd) => {
                    let loaded = xlated(fd);
                    close(fd);
                    allowed += 1;
                    if loaded != reference {
                        wrong.push(loaded);
                    }
                }
                Err(libc::EPERM) => refused += 1,
                Err(e) => panic!("a load failed with errno {e}, neither allowed nor denied by the gate"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().expect("the flipper")
    });
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    report!(
        "race on {}: {attempted} loads attempted, {allowed} allowed (each the harmless form), {refused} denied, \
         {flips} flips of the user buffer, in {:.1} s",
        release.trim(),
        started.elapsed().as_secs_f64()
    );
    assert!(wrong.is_empty(), "{} loads succeeded with other instructions than the harmless form", wrong.len());
    assert!(flips >= 20_000, "only {flips} flips: the race was not exercised");
    assert!(allowed > 0 && refused > 0, "both forms must have been loaded: {allowed} allowed, {refused} denied");
}
