//! Whole-machine CPU utilization and memory, as Triton's `nv_cpu_*`
//! metrics report them: a sampler thread reads `/proc/stat` and
//! `/proc/meminfo` every interval and keeps the latest figures. The
//! utilization is the share of CPU time not idle (idle and iowait count as
//! idle) between two readings; memory used is total less available. Where
//! those files cannot be read (not Linux), the figures stay unknown and
//! the metrics are left out. Parsing is separate from reading, so it is
//! tested on fixture text.
//!
//! The same thread samples the GPUs ([`crate::gpu::sample`]) at each
//! reading, first right after it starts (loading the driver and NVML there,
//! off the thread that starts the server).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::gpu::{self, GpuSample};

/// Cumulative CPU time counters of all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
    /// Ticks in all states.
    pub total: u64,
}

impl CpuTimes {
    /// Parses the aggregate `cpu` line of `/proc/stat`.
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice];
        // guest time is already counted in user and nice.
        if fields.len() < 4 {
            return None;
        }
        let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
        let total = fields.iter().take(8).sum();
        Some(CpuTimes { idle, total })
    }

    /// The share of time not idle from `earlier` to `self`, 0 to 1; `None`
    /// when no time passed.
    pub fn utilization_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        if total == 0 {
            return None;
        }
        Some((1.0 - idle as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// Machine memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `MemTotal`.
    pub total: u64,
    /// `MemTotal` less `MemAvailable`.
    pub used: u64,
}

impl Memory {
    /// Parses `/proc/meminfo` (values in kB).
    pub fn parse(meminfo: &str) -> Option<Memory> {
        let field = |name: &str| -> Option<u64> {
            let line = meminfo
                .lines()
                .find(|l| l.split_once(':').is_some_and(|(key, _)| key.trim() == name))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kb.checked_mul(1024)
        };
        let total = field("MemTotal")?;
        let available = field("MemAvailable")?;
        Some(Memory {
            total,
            used: total.saturating_sub(available),
        })
    }
}

/// The latest figures; `None` where unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SystemSample {
    /// CPU utilization over the last interval, 0 to 1 (unknown until one
    /// interval has passed).
    pub cpu_utilization: Option<f64>,
    /// Memory at the last reading.
    pub memory: Option<Memory>,
}

struct State {
    latest: SystemSample,
    gpus: Vec<GpuSample>,
    stop: bool,
}

type Shared = (Mutex<State>, Condvar);

fn read_cpu() -> Option<CpuTimes> {
    CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn read_memory() -> Option<Memory> {
    Memory::parse(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// Samples the machine every interval on its own thread until dropped.
pub struct SystemSampler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SystemSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemSampler")
            .field("latest", &self.latest())
            .finish()
    }
}

impl SystemSampler {
    /// Reads memory and the CPU counters now, then again every `interval`.
    pub fn start(interval: Duration) -> std::io::Result<SystemSampler> {
        let shared: Arc<Shared> = Arc::new((
            Mutex::new(State {
                latest: SystemSample {
                    cpu_utilization: None,
                    memory: read_memory(),
                },
                gpus: Vec::new(),
                stop: false,
            }),
            Condvar::new(),
        ));
        let mut previous = read_cpu();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("nereid-metrics".to_owned())
            .spawn(move || {
                let (lock, wake) = &*thread_shared;
                let gpus = gpu::sample();
                let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
                state.gpus = gpus;
                loop {
                    state = wake
                        .wait_timeout_while(state, interval, |s| !s.stop)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    if state.stop {
                        return;
                    }
                    drop(state);
                    let now = read_cpu();
                    let cpu_utilization = match (&now, &previous) {
                        (Some(now), Some(before)) => now.utilization_since(before),
                        _ => None,
                    };
                    previous = now;
                    let memory = read_memory();
                    let gpus = gpu::sample();
                    state = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    state.gpus = gpus;
                    state.latest = SystemSample {
                        cpu_utilization: cpu_utilization.or(state.latest.cpu_utilization),
                        memory,
                    };
                }
            })?;
        Ok(SystemSampler {
            shared,
            thread: Some(thread),
        })
    }

    /// The latest figures.
    pub fn latest(&self) -> SystemSample {
        self.shared
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .latest
    }

    /// The GPUs' latest figures (none without GPUs).
    pub fn latest_gpus(&self) -> Vec<GpuSample> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .gpus
            .clone()
    }
}

impl Drop for SystemSampler {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the metrics sampler thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 800 40 3 2 0 7 0\n\
                        cpu0 50 2 25 400 20 1 1 0 3 0\n\
                        intr 12345\nctxt 999\n";

    #[test]
    fn cpu_counters_and_utilization() {
        let before = CpuTimes::parse(STAT).unwrap();
        assert_eq!(
            before,
            CpuTimes {
                idle: 840,
                total: 1000
            }
        );
        let after = CpuTimes::parse("cpu  150 5 100 1000 40 3 2 0 0 0\n").unwrap();
        // 300 ticks passed, 200 of them idle.
        let u = after.utilization_since(&before).unwrap();
        assert!((u - 1.0 / 3.0).abs() < 1e-12, "{u}");
        assert_eq!(before.utilization_since(&before), None);
        assert_eq!(before.utilization_since(&after), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 3 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3\n"), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16318412 kB\n\
                    MemFree:          512000 kB\n\
                    MemAvailable:    8159206 kB\n\
                    Buffers:          100 kB\n";
        assert_eq!(
            Memory::parse(text),
            Some(Memory {
                total: 16_318_412 * 1024,
                used: 8_159_206 * 1024
            })
        );
        assert_eq!(Memory::parse("MemTotal: 10 kB\n"), None);
        assert_eq!(
            Memory::parse("MemTotal: ten kB\nMemAvailable: 1 kB\n"),
            None
        );
    }

    #[test]
    fn sampler_stops_when_dropped() {
        let sampler = SystemSampler::start(Duration::from_secs(3600)).unwrap();
        assert_eq!(sampler.latest().cpu_utilization, None);
        drop(sampler);
    }
}
