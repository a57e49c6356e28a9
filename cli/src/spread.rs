//! Worker threads moved to CPUs of their own as they start.
//!
//! A kernel may keep a new thread on its parent's CPU while the other CPUs idle, until a load balance moves it:
//! up to a scheduler tick (~4 ms), as long as a large object's whole analysis. The build VM's kernel does
//! (`sched_vcpu_pack`): two threads of 2 ms of work each took 4 ms there, 2.2 ms once the second moved itself
//! (docs/benchmarks.md). So each worker, started by a thread that then yields its CPU, moves itself to the next
//! CPU it may run on and then lets the scheduler place it anywhere again. Where the kernel has already placed it
//! on another CPU, it stays.

use std::mem::{size_of, zeroed};

/// The CPU the calling thread runs on (`usize::MAX` if unknown), for [`start`] on the threads it starts.
pub fn here() -> usize {
    // SAFETY: no arguments; reads the CPU number.
    usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(usize::MAX)
}

/// First thing on a new worker thread, number `k` of the thread that started it on CPU `parent` (worker 0 is
/// the starter's own): moves it to the `k`-th CPU after `parent` in the thread's allowed set, round and round
/// (with more workers than CPUs, worker `n` shares the parent's), if it still runs on `parent`. The allowed set
/// is then restored: the thread is placed, not pinned. Errors leave it where it is.
pub fn start(parent: usize, k: usize) {
    if here() != parent {
        return;
    }
    let Some(allowed) = allowed() else { return };
    // SAFETY (CPU_ISSET): `nth_after` asks only for indices below CPU_SETSIZE.
    if let Some(cpu) = nth_after(parent, k, |c| unsafe { libc::CPU_ISSET(c, &allowed) }).filter(|&c| c != parent) {
        visit(cpu, &allowed);
    }
}

/// The hooks that place the library's analysis threads as [`start`] does.
pub fn install() {
    bpfgate::unstable::analysis::set_worker_hooks(bpfgate::unstable::analysis::WorkerHooks {
        spawning: here,
        started: start,
    });
}

const CPUS: usize = libc::CPU_SETSIZE as usize;

/// How many CPUs the process may run on (its affinity, as `nproc` counts), at least 1. Not
/// `std::thread::available_parallelism`, which also reads the cgroup's CPU quota from /proc and /sys: that
/// cost ~0.1 ms here, as much as inspecting a small object.
pub fn cpus() -> usize {
    // SAFETY: CPU_COUNT reads the set `allowed` filled.
    allowed().map_or(1, |set| usize::try_from(unsafe { libc::CPU_COUNT(&set) }).unwrap_or(1).max(1))
}

/// The CPUs the calling thread may run on.
fn allowed() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is a plain bit array; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: pid 0 is the calling thread; the size is that of `set`.
    (unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } == 0).then_some(set)
}

/// The `k`-th CPU after `parent` that `allowed` holds, counting round the allowed CPUs (`parent` among them
/// when allowed: the 0-th is the first allowed CPU from `parent` on). None if none is allowed.
fn nth_after(parent: usize, k: usize, allowed: impl Fn(usize) -> bool) -> Option<usize> {
    let order: Vec<usize> = (0..CPUS).map(|i| (parent % CPUS + i) % CPUS).filter(|&c| allowed(c)).collect();
    order.get(k % order.len().max(1)).copied()
}

/// Runs the calling thread on `cpu` (the kernel moves it before `sched_setaffinity` returns), then lets it run
/// on `allowed` again. The CPU it ran on in between, if the move was made.
fn visit(cpu: usize, allowed: &libc::cpu_set_t) -> Option<usize> {
    // SAFETY: as in `allowed`; `cpu` comes from `nth_after` (or the allowed set), below CPU_SETSIZE.
    let mut one: libc::cpu_set_t = unsafe { zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: pid 0 is the calling thread; the sizes are those of the sets.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) } != 0 {
        return None;
    }
    let ran_on = here();
    // SAFETY: as above.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), allowed) };
    Some(ran_on)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kth_allowed_cpu_after_the_parent_round_and_round() {
        let all4 = |c: usize| c < 4;
        assert_eq!(nth_after(1, 0, all4), Some(1), "worker 0 is the parent's own");
        assert_eq!(nth_after(1, 1, all4), Some(2));
        assert_eq!(nth_after(1, 2, all4), Some(3));
        assert_eq!(nth_after(1, 3, all4), Some(0));
        assert_eq!(nth_after(1, 4, all4), Some(1), "more workers than CPUs: the fifth shares the parent's");
        let sparse = |c: usize| c == 2 || c == 5;
        assert_eq!(nth_after(2, 1, sparse), Some(5));
        assert_eq!(nth_after(5, 1, sparse), Some(2));
        assert_eq!(nth_after(0, 0, sparse), Some(2), "a parent outside the set: counted from the next allowed");
        assert_eq!(nth_after(0, 1, |c| c == 0), Some(0), "one CPU: nowhere else to go");
        assert_eq!(nth_after(0, 1, |_| false), None);
    }

    /// The count is the kernel's list of the CPUs the process may run on.
    #[test]
    fn cpus_counts_the_allowed_list() {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("the allowed list");
        let listed: usize = list
            .trim()
            .split(',')
            .map(|r| match r.split_once('-') {
                Some((a, b)) => b.parse::<usize>().expect("a CPU") - a.parse::<usize>().expect("a CPU") + 1,
                None => 1,
            })
            .sum();
        assert_eq!(cpus(), listed, "{list}");
    }

    /// A thread runs on the CPU it visits, and may run wherever it could before afterwards.
    #[test]
    fn a_visit_runs_on_the_cpu_and_restores_the_allowed_set() {
        let before = allowed().expect("the allowed set");
        // SAFETY (CPU_ISSET): indices below CPU_SETSIZE.
        let last = (0..CPUS).rev().find(|&c| unsafe { libc::CPU_ISSET(c, &before) }).expect("a CPU");
        let (ran_on, after) =
            std::thread::spawn(move || (visit(last, &before), allowed())).join().expect("the thread ran");
        assert_eq!(ran_on, Some(last));
        let after = after.expect("the allowed set");
        // SAFETY: both are initialized sets.
        assert!(unsafe { libc::CPU_EQUAL(&after, &before) }, "the allowed set is restored");
    }
}
