//! A socket text source (Flink's `socketTextStream`): connects to `host:port` and reads
//! `key,event_time_ms,value` lines until the peer closes the connection.
//!
//! Try it with `nc -lk 9999` in one terminal and `flowlab watermarks --socket localhost:9999` in
//! another. The reader never blocks a worker: the socket is non-blocking, and a quiet socket makes
//! the reader report [`ReadStatus::Pending`] so the worker can do other work.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;

use super::{Event, FinishedReader, ReadStatus, Source, SourceReader, parse_event_line};
use crate::error::{Error, Result};

/// Reads event lines from a TCP server, with one reader.
#[derive(Clone, Debug)]
pub struct SocketSource {
    address: String,
}

impl SocketSource {
    /// A source reading from `address` (`host:port`).
    pub fn new(address: &str) -> Self {
        SocketSource { address: address.to_string() }
    }
}

impl Source<Event> for SocketSource {
    fn is_single_stream(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("socket {}", self.address)
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SourceReader<Event>>> {
        if instance != 0 {
            return Ok(Box::new(FinishedReader));
        }
        let context = format!("socket {}", self.address);
        let stream = TcpStream::connect(&self.address).map_err(|e| Error::io("cannot connect to", &self.address, e))?;
        stream.set_nonblocking(true).map_err(|e| Error::io("cannot configure", &self.address, e))?;
        Ok(Box::new(SocketReader { context, stream, pending: Vec::new(), line: 0, offset: 0, closed: false }))
    }
}

struct SocketReader {
    context: String,
    stream: TcpStream,
    pending: Vec<u8>,
    line: u64,
    offset: u64,
    closed: bool,
}

impl SocketReader {
    fn drain_lines(&mut self, out: &mut Vec<(i64, Event)>, max_records: usize) -> Result<usize> {
        let mut produced = 0;
        let mut consumed = 0;
        while produced < max_records {
            let Some(newline) = self.pending[consumed..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let raw = &self.pending[consumed..consumed + newline];
            consumed += newline + 1;
            self.line += 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw).map_err(|_| Error::BadLine {
                file: self.context.clone(),
                line: self.line,
                reason: "the line is not UTF-8".to_string(),
            })?;
            match parse_event_line(text, self.line) {
                Ok(Some(parsed)) => {
                    out.push(parsed);
                    produced += 1;
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(Error::BadLine { file: self.context.clone(), line: self.line, reason });
                }
            }
        }
        self.pending.drain(..consumed);
        self.offset += consumed as u64;
        Ok(produced)
    }
}

impl SourceReader<Event> for SocketReader {
    fn read(&mut self, out: &mut Vec<(i64, Event)>, max_records: usize) -> Result<ReadStatus> {
        let mut chunk = [0u8; 1 << 14];
        while !self.closed && self.pending.len() < (1 << 20) {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    if !self.pending.is_empty() && self.pending.last() != Some(&b'\n') {
                        self.pending.push(b'\n'); // the last line may lack its newline
                    }
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("cannot read from", &self.context, e)),
            }
        }
        let produced = self.drain_lines(out, max_records)?;
        Ok(if self.closed && self.pending.is_empty() {
            ReadStatus::Finished
        } else if produced > 0 {
            ReadStatus::More
        } else {
            ReadStatus::Pending
        })
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}
