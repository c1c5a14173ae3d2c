//! Writing results to stdout. A closed pipe (`jct list | head`) ends the command
//! quietly instead of panicking as `println!` would.

use std::io::{IsTerminal, Write};

use serde_json::Value as Json;

use super::args::Output;
use super::error::CliError;

pub struct Out {
    pub format: Output,
}

impl Out {
    pub fn new(format: Output) -> Out {
        Out { format }
    }

    pub fn is_json(&self) -> bool {
        self.format == Output::Json
    }

    /// One JSON value on one line.
    pub fn json(&self, value: &Json) -> Result<(), CliError> {
        self.raw(&format!("{value}\n"))
    }

    /// Text as given (already made safe by `render`).
    pub fn raw(&self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(closed_or_failed)
    }

    /// Whether stdout is a terminal a line can be redrawn on.
    pub fn is_terminal(&self) -> bool {
        self.format == Output::Text && std::io::stdout().is_terminal()
    }

    /// Redraws the current terminal line with `line`.
    pub fn redraw(&self, line: &str) -> Result<(), CliError> {
        // carriage return, then ESC[2K erases the line; `line` holds no controls
        self.raw(&format!("\r\u{1b}[2K{line}"))
    }
}

fn closed_or_failed(error: std::io::Error) -> CliError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::OutputClosed
    } else {
        CliError::Other(format!("cannot write the output: {error}"))
    }
}

/// Writes to stderr, ignoring failures (there is nowhere left to report them).
pub fn stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
