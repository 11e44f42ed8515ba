//! Mempool and Mbuf: allocation, data access, headroom/tailroom edits, and
//! that dropping mbufs returns them to the pool.

mod common;

use dpdk_bindings::mempool::DEFAULT_DATA_ROOM;
use dpdk_bindings::{Mbuf, Mempool};

#[test]
fn mempool_create_and_lookup() {
    let eal = common::eal();
    let pool = Mempool::create(eal, "t_create", 511, 0).expect("create");
    assert_eq!(pool.name(), "t_create");
    assert_eq!(pool.size(), 511);
    assert_eq!(pool.avail_count(), 511);
    assert_eq!(pool.in_use_count(), 0);
    let found = Mempool::lookup(eal, "t_create").expect("lookup");
    assert_eq!(found.as_ptr(), pool.as_ptr());
    assert!(Mempool::lookup(eal, "t_no_such_pool").is_none());
}

#[test]
fn mempool_duplicate_name_is_an_error() {
    let eal = common::eal();
    Mempool::create(eal, "t_dup", 63, 0).expect("create");
    let err = Mempool::create(eal, "t_dup", 63, 0).unwrap_err();
    assert_eq!(err.call(), "rte_pktmbuf_pool_create");
    assert_eq!(err.errno(), libc::EEXIST, "{err}");
    assert!(err.to_string().contains("t_dup"), "{err}");
}

#[test]
fn mbuf_alloc_free_returns_to_pool() {
    let pool = Mempool::create(common::eal(), "t_counts", 127, 0).expect("create");
    let mut held: Vec<Mbuf> = (0..100).map(|_| pool.alloc().expect("alloc")).collect();
    assert_eq!(pool.avail_count(), 27);
    assert_eq!(pool.in_use_count(), 100);
    held.truncate(40);
    assert_eq!(pool.avail_count(), 87);
    let bulk = pool.alloc_bulk(87).expect("bulk");
    assert_eq!(pool.avail_count(), 0);
    let err = pool.alloc().unwrap_err();
    assert_eq!(err.errno(), libc::ENOBUFS);
    assert!(pool.alloc_bulk(1).is_err());
    drop(bulk);
    drop(held);
    assert_eq!(pool.avail_count(), 127);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn mbuf_into_raw_and_back() {
    let pool = Mempool::create(common::eal(), "t_raw", 15, 0).expect("create");
    let mut m = pool.alloc().unwrap();
    assert!(m.extend_from_slice(b"hello"));
    let raw = m.into_raw();
    assert_eq!(pool.in_use_count(), 1, "into_raw must not free");
    // SAFETY: raw came from into_raw above and is owned by nobody else.
    let m = unsafe { Mbuf::from_raw(raw) }.unwrap();
    assert_eq!(m.data(), b"hello");
    drop(m);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn mbuf_append_prepend_adj_trim() {
    let pool = Mempool::create(common::eal(), "t_edit", 15, 0).expect("create");
    let mut m = pool.alloc().unwrap();
    assert!(m.is_empty());
    assert_eq!(m.nb_segs(), 1);
    let head = m.headroom();
    assert_eq!(head, dpdk_bindings::ffi::RTE_PKTMBUF_HEADROOM as usize);
    assert_eq!(m.tailroom(), DEFAULT_DATA_ROOM as usize - head);

    let payload = common::frame(7, 50);
    let dst = m.append(payload.len() as u16).expect("append");
    dst.copy_from_slice(&payload);
    assert_eq!(m.len(), 64);
    assert_eq!(m.data_len(), 64);
    assert_eq!(m.data(), &payload[..]);

    // Push a VLAN-ish 4-byte tag in front, then pop it again.
    m.prepend(4)
        .expect("prepend")
        .copy_from_slice(&[0x81, 0, 0, 5]);
    assert_eq!(m.headroom(), head - 4);
    assert_eq!(&m.data()[..4], &[0x81, 0, 0, 5]);
    assert_eq!(&m.data()[4..], &payload[..]);
    assert!(m.adj(4));
    assert_eq!(m.data(), &payload[..]);
    assert_eq!(m.headroom(), head);

    m.data_mut()[0] = 0xff;
    assert_eq!(m.data()[0], 0xff);
    assert!(m.trim(10));
    assert_eq!(m.len(), 54);

    // Out of room: nothing changes.
    assert!(m.prepend((head + 1) as u16).is_none());
    assert!(m.append((m.tailroom() + 1) as u16).is_none());
    assert!(!m.adj(1000));
    assert!(!m.trim(1000));
    assert_eq!(m.len(), 54);
    m.prefetch_data();
}

#[test]
fn mbufs_move_between_threads() {
    let pool = Mempool::create(common::eal(), "t_threads", 63, 0).expect("create");
    let mbufs: Vec<Mbuf> = (0..32).map(|_| pool.alloc().unwrap()).collect();
    std::thread::spawn(move || drop(mbufs)).join().unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let mut m = pool.alloc().expect("alloc in thread");
                    assert!(m.extend_from_slice(&[1, 2, 3]));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(pool.avail_count(), 63);
}
