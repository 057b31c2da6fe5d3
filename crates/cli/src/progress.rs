//! Progress reporting of long commands on stderr: a bar on a terminal,
//! plain lines at most every two seconds otherwise (`--progress` into a log).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use poolsync_engine::sync::{NoProgress, Progress};

/// The reporter for a command named `label`: none when `off` (dry run,
/// `--no-progress`), a bar when stderr is a terminal, plain lines when
/// `forced` (`--progress`) into something else, and none otherwise.
pub fn reporter(label: &'static str, off: bool, forced: bool) -> Box<dyn Progress> {
    if off {
        Box::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Box::new(bar(label))
    } else if forced {
        Box::new(Lines::new(label))
    } else {
        Box::new(NoProgress)
    }
}

/// A progress bar on stderr: bytes done, rate and time left (indicatif
/// draws it only on a terminal).
pub struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.reset_eta();
        self.0.reset_elapsed();
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn bar(label: &str) -> Bar {
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let template = format!(
        "{{spinner}} {label} [{{bar:30}}] {{binary_bytes}}/{{binary_total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
    );
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    Bar(pb)
}

/// `--progress` when stderr is not a terminal (a log file): one plain line
/// at most every two seconds, and one at the end.
struct Lines {
    label: &'static str,
    state: Mutex<LineState>,
}

struct LineState {
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    finished: bool,
}

impl Lines {
    fn new(label: &'static str) -> Self {
        let now = Instant::now();
        Lines {
            label,
            state: Mutex::new(LineState {
                total: 0,
                done: 0,
                started: now,
                last: now,
                finished: false,
            }),
        }
    }
}

impl LineState {
    fn line(&self, label: &str) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let eta = if rate > 0.0 {
            format!(
                "{:.0} s",
                self.total.saturating_sub(self.done) as f64 / rate
            )
        } else {
            "unknown".to_string()
        };
        format!(
            "{label}: {} of {} bytes, {:.1} MiB/s, ETA {eta}",
            self.done,
            self.total,
            rate / f64::from(1u32 << 20)
        )
    }
}

impl Progress for Lines {
    fn start(&self, total: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.total = total;
            st.done = 0;
            st.finished = false;
            st.started = Instant::now();
            st.last = st.started;
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(mut st) = self.state.lock() {
            st.done += bytes;
            if st.last.elapsed() >= Duration::from_secs(2) {
                st.last = Instant::now();
                eprintln!("{}", st.line(self.label));
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut st) = self.state.lock() {
            if !st.finished && st.total > 0 {
                st.finished = true;
                eprintln!("{}", st.line(self.label));
            }
        }
    }
}
