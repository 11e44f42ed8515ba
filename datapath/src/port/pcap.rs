//! Capture-file ports: [`PcapRxPort`] replays a pcap file as received
//! traffic, [`PcapTxPort`] records what it is sent into a pcap file.
//!
//! Both keep their file behind a mutex taken once per burst. Replay reads
//! classic pcap and pcapng (told apart by the file's magic number); only
//! Ethernet frames (link type 1) are delivered: a classic capture of another
//! link type is refused when opened, and a pcapng record from a non-Ethernet
//! interface is dropped as [`PortDropReason::NotEthernet`]. Recording writes
//! classic pcap.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapReader};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, Endianness, TsResolution};

use super::{LinkState, Port, PortCounters, PortDropReason, PortStats};
use crate::packet::{PacketBatch, PacketPool, PortNo};

/// An error opening or writing a capture, naming the file.
#[derive(Debug)]
pub struct PcapPortError {
    pub path: PathBuf,
    pub what: String,
}

impl std::fmt::Display for PcapPortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for PcapPortError {}

fn err(path: &Path, what: impl std::fmt::Display) -> PcapPortError {
    PcapPortError {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

type Input = BufReader<Box<dyn Read + Send>>;

/// An open capture of either format.
enum Reader {
    Pcap(PcapReader<Input>),
    PcapNg {
        reader: PcapNgReader<Input>,
        /// Link type of each interface of the current section, by id.
        links: Vec<DataLink>,
    },
}

/// What the next record of a capture was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    /// An Ethernet frame (handed to the caller's closure).
    Frame,
    /// A frame of another link type.
    NotEthernet,
    /// A block that carries no frame (pcapng metadata).
    Other,
    /// A record that could not be decoded.
    Corrupt,
}

impl Reader {
    /// Read the next record; an Ethernet frame is passed to `on_frame`
    /// (borrowed from the reader's buffer). `None` at the end of the file.
    fn next_record(&mut self, on_frame: impl FnOnce(&[u8])) -> Option<Record> {
        match self {
            Reader::Pcap(r) => Some(match r.next_packet()? {
                Ok(p) => {
                    on_frame(&p.data);
                    Record::Frame
                }
                Err(_) => Record::Corrupt,
            }),
            Reader::PcapNg { reader, links } => {
                let block = match reader.next_block()? {
                    Ok(b) => b,
                    Err(_) => return Some(Record::Corrupt),
                };
                let is_ethernet = |id: u32| links.get(id as usize) == Some(&DataLink::ETHERNET);
                let frame = match &block {
                    Block::EnhancedPacket(epb) => Some((is_ethernet(epb.interface_id), &epb.data)),
                    Block::SimplePacket(spb) => Some((is_ethernet(0), &spb.data)),
                    _ => None,
                };
                Some(match frame {
                    Some((true, data)) => {
                        on_frame(data);
                        Record::Frame
                    }
                    Some((false, _)) => Record::NotEthernet,
                    None => {
                        match block {
                            Block::SectionHeader(_) => links.clear(),
                            Block::InterfaceDescription(idb) => links.push(idb.linktype),
                            _ => {}
                        }
                        Record::Other
                    }
                })
            }
        }
    }
}

/// First four bytes of a pcapng file (the section header block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

struct RxState {
    reader: Option<Reader>,
    /// Completed passes over the file.
    passes: u64,
}

/// Replays a capture as received traffic.
///
/// Each `rx_burst` returns the next frames of the file. At the end of the
/// file the port either starts again (`repeat`) or reports its link down and
/// receives nothing more, which is how a replay signals that it is done.
pub struct PcapRxPort {
    name: String,
    port_no: PortNo,
    path: PathBuf,
    repeat: bool,
    state: Mutex<RxState>,
    done: AtomicBool,
    counters: PortCounters,
}

fn open_reader(path: &Path) -> Result<Reader, PcapPortError> {
    let file = File::open(path).map_err(|e| err(path, e))?;
    let boxed: Box<dyn Read + Send> = Box::new(file);
    let mut input = BufReader::new(boxed);
    let head = input.fill_buf().map_err(|e| err(path, e))?;
    if head.starts_with(&PCAPNG_MAGIC) {
        let reader = PcapNgReader::new(input).map_err(|e| err(path, e))?;
        let links = reader.interfaces().iter().map(|i| i.linktype).collect();
        return Ok(Reader::PcapNg { reader, links });
    }
    let reader = PcapReader::new(input).map_err(|e| err(path, e))?;
    let link = reader.header().datalink;
    if link != DataLink::ETHERNET {
        return Err(err(path, format!("link type {link:?} is not Ethernet")));
    }
    Ok(Reader::Pcap(reader))
}

impl PcapRxPort {
    /// Open `path` for replay; with `repeat` the file is replayed forever.
    pub fn open(
        name: impl Into<String>,
        port_no: PortNo,
        path: impl AsRef<Path>,
        repeat: bool,
    ) -> Result<PcapRxPort, PcapPortError> {
        let path = path.as_ref().to_path_buf();
        let reader = open_reader(&path)?;
        Ok(PcapRxPort {
            name: name.into(),
            port_no,
            path,
            repeat,
            state: Mutex::new(RxState {
                reader: Some(reader),
                passes: 0,
            }),
            done: AtomicBool::new(false),
            counters: PortCounters::default(),
        })
    }

    /// True once the file has been read to the end (never with `repeat`).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Completed passes over the file.
    pub fn passes(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.passes)
    }
}

impl Port for PcapRxPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn port_no(&self) -> PortNo {
        self.port_no
    }

    fn rx_burst(&self, rxq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        if rxq != 0 || self.is_done() {
            return 0;
        }
        let Ok(mut st) = self.state.lock() else {
            return 0;
        };
        let (mut n, mut bytes, mut too_large, mut errors) = (0u64, 0u64, 0u64, 0u64);
        let mut not_ethernet = 0u64;
        let mut empty_passes = 0;
        while !batch.is_full() {
            let st = &mut *st;
            let Some(reader) = st.reader.as_mut() else {
                break;
            };
            let mut frame_result = None;
            let record = reader.next_record(|data| {
                let mut p = pool.alloc(self.port_no);
                frame_result = Some(match p.set_frame(data) {
                    Ok(()) => Ok(p),
                    Err(_) => Err(p),
                });
            });
            match record {
                Some(Record::Frame) => match frame_result {
                    Some(Ok(p)) => {
                        empty_passes = 0;
                        bytes += p.len() as u64;
                        n += 1;
                        // Cannot fail: the loop checked that the batch has room.
                        let _ = batch.push(p);
                    }
                    Some(Err(p)) => {
                        too_large += 1;
                        pool.free(p);
                    }
                    None => {}
                },
                Some(Record::NotEthernet) => not_ethernet += 1,
                Some(Record::Other) => {}
                end => {
                    // End of file, or a corrupt record (counted): a pass
                    // ends (the rest of a corrupt file cannot be trusted).
                    if matches!(end, Some(Record::Corrupt)) {
                        errors += 1;
                    }
                    st.passes += 1;
                    empty_passes += 1;
                    // A file with no usable frame would spin: stop it.
                    if self.repeat && empty_passes < 2 {
                        match open_reader(&self.path) {
                            Ok(r) => st.reader = Some(r),
                            Err(_) => {
                                errors += 1;
                                st.reader = None;
                            }
                        }
                    } else {
                        st.reader = None;
                    }
                    if st.reader.is_none() {
                        self.done.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        drop(st);
        self.counters.rx(n, bytes);
        self.counters.drop(PortDropReason::TooLarge, too_large);
        self.counters.drop(PortDropReason::RxError, errors);
        self.counters
            .drop(PortDropReason::NotEthernet, not_ethernet);
        n as usize
    }

    fn tx_burst(&self, _txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        // A replay port is input only.
        self.counters
            .drop(PortDropReason::TxError, batch.len() as u64);
        batch.free_into(pool);
        0
    }

    fn stats(&self) -> PortStats {
        self.counters.snapshot()
    }

    fn link_state(&self) -> LinkState {
        if self.is_done() {
            LinkState::Down
        } else {
            LinkState::Up
        }
    }
}

/// Where [`PcapTxPort`] takes the timestamps it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxTimestamps {
    /// The wall clock, read once per burst.
    Wall,
    /// Packet `i` (from 0) is stamped `i` microseconds: byte-identical
    /// output for identical input (golden files).
    Sequence,
}

struct TxState {
    out: BufWriter<Box<dyn Write + Send>>,
    written: u64,
    failed: bool,
}

/// Records every packet it is sent into a capture file.
///
/// The file header is written by `pcap_file`; records (16-byte header and
/// frame, little-endian, microsecond stamps) are appended straight into a
/// buffered writer so that [`PcapTxPort::flush`] can push them to disk at
/// any time. A write error stops the recording and counts the packets
/// that follow as [`PortDropReason::TxError`].
pub struct PcapTxPort {
    name: String,
    port_no: PortNo,
    path: PathBuf,
    stamps: TxTimestamps,
    state: Mutex<TxState>,
    counters: PortCounters,
}

impl PcapTxPort {
    /// Create (truncate) `path` and write an Ethernet pcap header.
    pub fn create(
        name: impl Into<String>,
        port_no: PortNo,
        path: impl AsRef<Path>,
        stamps: TxTimestamps,
    ) -> Result<PcapTxPort, PcapPortError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| err(&path, e))?;
        let boxed: Box<dyn Write + Send> = Box::new(file);
        let mut out = BufWriter::new(boxed);
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: 65535,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        header.write_to(&mut out).map_err(|e| err(&path, e))?;
        Ok(PcapTxPort {
            name: name.into(),
            port_no,
            path,
            stamps,
            state: Mutex::new(TxState {
                out,
                written: 0,
                failed: false,
            }),
            counters: PortCounters::default(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Push buffered records to the file.
    pub fn flush(&self) -> Result<(), PcapPortError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| err(&self.path, "writer lock poisoned"))?;
        st.out.flush().map_err(|e| err(&self.path, e))
    }
}

impl Drop for PcapTxPort {
    fn drop(&mut self) {
        if let Ok(st) = self.state.get_mut() {
            let _ = st.out.flush();
        }
    }
}

fn write_record(out: &mut impl Write, ts: Duration, frame: &[u8]) -> std::io::Result<()> {
    let len = frame.len() as u32;
    let mut rec = [0u8; 16];
    rec[0..4].copy_from_slice(&(ts.as_secs() as u32).to_le_bytes());
    rec[4..8].copy_from_slice(&ts.subsec_micros().to_le_bytes());
    rec[8..12].copy_from_slice(&len.to_le_bytes());
    rec[12..16].copy_from_slice(&len.to_le_bytes());
    out.write_all(&rec)?;
    out.write_all(frame)
}

impl Port for PcapTxPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn port_no(&self) -> PortNo {
        self.port_no
    }

    fn rx_burst(&self, _rxq: usize, _batch: &mut PacketBatch, _pool: &mut PacketPool) -> usize {
        0
    }

    fn tx_burst(&self, _txq: usize, batch: &mut PacketBatch, pool: &mut PacketPool) -> usize {
        let Ok(mut st) = self.state.lock() else {
            self.counters
                .drop(PortDropReason::TxError, batch.len() as u64);
            batch.free_into(pool);
            return 0;
        };
        let wall = match self.stamps {
            TxTimestamps::Wall => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            TxTimestamps::Sequence => Duration::ZERO,
        };
        let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        for p in batch.drain() {
            if st.failed {
                errors += 1;
            } else {
                let ts = match self.stamps {
                    TxTimestamps::Wall => wall,
                    TxTimestamps::Sequence => Duration::from_micros(st.written),
                };
                if write_record(&mut st.out, ts, p.data()).is_ok() {
                    st.written += 1;
                    sent += 1;
                    bytes += p.len() as u64;
                } else {
                    st.failed = true;
                    errors += 1;
                }
            }
            pool.free(p);
        }
        drop(st);
        self.counters.tx(sent, bytes);
        self.counters.drop(PortDropReason::TxError, errors);
        sent as usize
    }

    fn stats(&self) -> PortStats {
        self.counters.snapshot()
    }

    fn link_state(&self) -> LinkState {
        match self.state.lock() {
            Ok(st) if !st.failed => LinkState::Up,
            _ => LinkState::Down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrovs-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn frame(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|b| (b + i) as u8).collect()
    }

    fn record(path: &Path, frames: &[Vec<u8>]) -> PortStats {
        let tx = PcapTxPort::create("out", PortNo(5), path, TxTimestamps::Sequence).unwrap();
        let mut pool = PacketPool::new(2048, 64, 32);
        for chunk in frames.chunks(crate::BATCH_SIZE) {
            let mut b = PacketBatch::new();
            for f in chunk {
                b.push(Packet::from_bytes(f)).unwrap();
            }
            assert_eq!(tx.tx_burst(0, &mut b, &mut pool), chunk.len());
            assert!(b.is_empty());
        }
        tx.flush().unwrap();
        tx.stats()
    }

    #[test]
    fn record_then_read_back_with_pcap_file() {
        let path = tmp("rt.pcap");
        let frames: Vec<Vec<u8>> = (0..70).map(|i| frame(i, 60 + i)).collect();
        let s = record(&path, &frames);
        assert_eq!(s.tx_packets, 70);
        assert_eq!(
            s.tx_bytes,
            frames.iter().map(|f| f.len() as u64).sum::<u64>()
        );
        let mut r = PcapReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        let mut i = 0;
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            assert_eq!(&p.data[..], &frames[i][..]);
            assert_eq!(p.orig_len as usize, frames[i].len());
            assert_eq!(p.timestamp, Duration::from_micros(i as u64));
            i += 1;
        }
        assert_eq!(i, 70);
    }

    #[test]
    fn replay_reads_everything_in_order_then_goes_down() {
        let path = tmp("replay.pcap");
        let frames: Vec<Vec<u8>> = (0..45).map(|i| frame(i, 64)).collect();
        record(&path, &frames);
        let rx = PcapRxPort::open("in", PortNo(3), &path, false).unwrap();
        let mut pool = PacketPool::new(2048, 64, 64);
        let mut got = Vec::new();
        let mut b = PacketBatch::new();
        for _ in 0..5 {
            rx.rx_burst(0, &mut b, &mut pool);
            for p in b.drain() {
                assert_eq!(p.meta.in_port, PortNo(3));
                assert_eq!(p.headroom(), 64);
                got.push(p.data().to_vec());
            }
        }
        assert_eq!(got, frames);
        assert!(rx.is_done());
        assert_eq!(rx.link_state(), LinkState::Down);
        assert_eq!(rx.stats().rx_packets, 45);
        assert_eq!(rx.passes(), 1);
        assert_eq!(rx.rx_burst(0, &mut b, &mut pool), 0);
    }

    #[test]
    fn repeat_replays_forever_and_too_large_frames_are_dropped() {
        let path = tmp("repeat.pcap");
        let frames = vec![frame(0, 60), frame(1, 3000), frame(2, 61)];
        record(&path, &frames);
        let rx = PcapRxPort::open("in", PortNo(3), &path, true).unwrap();
        let mut pool = PacketPool::new(2048, 64, 64);
        let mut b = PacketBatch::new();
        assert_eq!(rx.rx_burst(0, &mut b, &mut pool), 32);
        let lens: Vec<usize> = b.iter().map(|p| p.len()).collect();
        assert_eq!(&lens[..4], &[60, 61, 60, 61]);
        assert!(!rx.is_done());
        assert!(rx.passes() >= 15);
        assert_eq!(rx.stats().drops(PortDropReason::TooLarge), 16);
    }

    #[test]
    fn repeat_of_a_file_without_usable_frames_stops() {
        let path = tmp("empty.pcap");
        record(&path, &[frame(0, 5000)]);
        let rx = PcapRxPort::open("in", PortNo(3), &path, true).unwrap();
        let mut pool = PacketPool::new(2048, 64, 8);
        let mut b = PacketBatch::new();
        assert_eq!(rx.rx_burst(0, &mut b, &mut pool), 0);
        assert!(rx.is_done());
    }

    #[test]
    fn pcapng_replay_delivers_ethernet_and_drops_other_links() {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        use pcap_file::pcapng::PcapNgWriter;

        let path = tmp("replay.pcapng");
        let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(i, 70)).collect();
        {
            let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
            w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535))
                .unwrap();
            w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 65535))
                .unwrap();
            for (i, f) in frames.iter().enumerate() {
                for iface in [0u32, 1] {
                    let epb = EnhancedPacketBlock {
                        interface_id: iface,
                        timestamp: Duration::from_micros(i as u64),
                        original_len: f.len() as u32,
                        data: std::borrow::Cow::Borrowed(&f[..]),
                        options: vec![],
                    };
                    w.write_pcapng_block(epb).unwrap();
                }
            }
        }
        let rx = PcapRxPort::open("in", PortNo(4), &path, false).unwrap();
        let mut pool = PacketPool::new(2048, 64, 64);
        let mut b = PacketBatch::new();
        assert_eq!(rx.rx_burst(0, &mut b, &mut pool), 5);
        let got: Vec<Vec<u8>> = b.iter().map(|p| p.data().to_vec()).collect();
        assert_eq!(got, frames);
        assert!(rx.is_done());
        assert_eq!(rx.stats().drops(PortDropReason::NotEthernet), 5);
    }

    #[test]
    fn a_classic_capture_of_another_link_type_is_refused() {
        let path = tmp("raw.pcap");
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ..PcapHeader::default()
        };
        let mut f = File::create(&path).unwrap();
        header.write_to(&mut f).unwrap();
        drop(f);
        let e = PcapRxPort::open("in", PortNo(1), &path, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not Ethernet"), "{e}");
    }

    #[test]
    fn open_errors_name_the_file() {
        let missing = tmp("does-not-exist.pcap");
        let e = PcapRxPort::open("in", PortNo(1), &missing, false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("does-not-exist.pcap"), "{e}");
        let junk = tmp("junk.pcap");
        std::fs::write(&junk, b"not a capture at all").unwrap();
        assert!(PcapRxPort::open("in", PortNo(1), &junk, false).is_err());
    }
}
