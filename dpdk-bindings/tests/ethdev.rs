//! EthDev over virtual devices: net_ring (tx on queue q loops back to rx
//! queue q of the same port) and net_null (rx makes packets, tx drops them).

mod common;

use dpdk_bindings::{EthDev, Mbuf, Mempool, PortConf, RssConf};

fn frames(pool: &Mempool, start: u32, count: u32) -> Vec<Mbuf> {
    (start..start + count)
        .map(|seq| {
            let mut m = pool.alloc().expect("alloc");
            assert!(m.extend_from_slice(&common::frame(seq, 50 + (seq % 7) as usize)));
            m
        })
        .collect()
}

fn seq_of(m: &Mbuf) -> u32 {
    u32::from_be_bytes(m.data()[14..18].try_into().unwrap())
}

#[test]
fn ring_loopback_burst_and_stats() {
    let eal = common::eal();
    let pool = Mempool::create(eal, "t_ring0", 2047, 0).unwrap();
    let mut port = EthDev::by_name(eal, "net_ring0").expect("net_ring0");
    let info = port.info().unwrap();
    assert_eq!(info.driver_name, "net_ring");
    assert!(info.max_rx_queues >= 1);
    port.configure(&PortConf::default(), pool)
        .expect("configure");
    assert_eq!((port.rx_queues(), port.tx_queues()), (1, 1));
    port.start().expect("start");
    assert!(port.is_started());
    port.set_promiscuous(true).expect("promisc on");
    assert!(port.is_promiscuous().unwrap());
    let link = port.link().expect("link");
    assert!(link.up, "{link:?}");
    port.reset_stats().unwrap();

    let mut tx = frames(&pool, 0, 32);
    assert_eq!(port.tx_burst(0, &mut tx), 32);
    assert!(tx.is_empty());

    let mut rx = Vec::new();
    let mut polls = 0;
    while rx.len() < 32 && polls < 100 {
        port.rx_burst(0, &mut rx, 32);
        polls += 1;
    }
    assert_eq!(rx.len(), 32);
    for (i, m) in rx.iter().enumerate() {
        assert_eq!(
            m.data(),
            &common::frame(i as u32, 50 + i % 7)[..],
            "frame {i}"
        );
    }
    assert_eq!(pool.in_use_count(), 32);
    drop(rx);
    assert_eq!(pool.in_use_count(), 0);

    let s = port.stats().unwrap();
    assert_eq!(s.tx_packets, 32, "{s:?}");
    assert_eq!(s.rx_packets, 32, "{s:?}");
    assert_eq!(s.queues.len(), 1);
    assert_eq!(s.queues[0].tx_packets, 32, "{s:?}");
    assert_eq!(s.queues[0].rx_packets, 32, "{s:?}");
    // net_ring (22.11) counts packets only, no bytes.
    port.reset_stats().unwrap();
    assert_eq!(port.stats().unwrap().rx_packets, 0);

    port.stop().unwrap();
    assert!(!port.is_started());
    let mut tx = frames(&pool, 0, 4);
    assert_eq!(port.tx_burst(0, &mut tx), 0, "a stopped port sends nothing");
    assert_eq!(tx.len(), 4, "unsent packets stay with the caller");
    let mut rx = Vec::new();
    assert_eq!(port.rx_burst(0, &mut rx, 32), 0);
}

#[test]
fn ring_full_tx_returns_unsent() {
    let eal = common::eal();
    let pool = Mempool::create(eal, "t_ring1", 4095, 0).unwrap();
    let mut port = EthDev::by_name(eal, "net_ring1").expect("net_ring1");
    // Two queues with RSS asked for: net_ring has no RSS, so none is applied.
    let conf = PortConf {
        rx_queues: 2,
        tx_queues: 2,
        rss: Some(RssConf::ip_tcp_udp()),
        ..PortConf::default()
    };
    port.configure(&conf, pool).expect("configure");
    assert_eq!(
        port.rss_hash_functions(),
        port.info().unwrap().rss_offloads & conf.rss.unwrap().hash_functions
    );
    port.start().unwrap();

    // The ring behind queue 1 holds fewer than 3000 packets.
    let mut tx = frames(&pool, 0, 3000);
    let sent = port.tx_burst(1, &mut tx);
    assert!(sent > 0 && sent < 3000, "sent {sent}");
    assert_eq!(tx.len(), 3000 - sent);
    assert_eq!(seq_of(&tx[0]), sent as u32, "unsent ones keep their order");
    assert_eq!(pool.in_use_count() as usize, 3000);

    // Queue 0 saw nothing; queue 1 returns exactly the sent ones, in order.
    let mut rx = Vec::new();
    assert_eq!(port.rx_burst(0, &mut rx, 64), 0);
    while port.rx_burst(1, &mut rx, 64) > 0 {}
    assert_eq!(rx.len(), sent);
    assert!(rx.iter().enumerate().all(|(i, m)| seq_of(m) == i as u32));
    let s = port.stats().unwrap();
    assert_eq!(s.queues[1].rx_packets, sent as u64, "{s:?}");
    assert_eq!(s.queues[0].rx_packets, 0, "{s:?}");
    assert_eq!(s.queues[1].tx_packets, sent as u64, "{s:?}");
    // net_ring (22.11) does not count a full ring as a tx error: callers
    // must count the unsent packets themselves.
    drop(rx);
    drop(tx);
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn null_rx_generates_tx_accepts() {
    let eal = common::eal();
    let pool = Mempool::create(eal, "t_null0", 1023, 0).unwrap();
    let mut port = EthDev::by_name(eal, "net_null0").expect("net_null0");
    port.configure(&PortConf::default(), pool).unwrap();
    port.start().unwrap();
    port.reset_stats().unwrap();

    let mut rx = Vec::new();
    assert_eq!(port.rx_burst(0, &mut rx, 32), 32);
    assert!(
        rx.iter().all(|m| m.len() == 64),
        "net_null makes 64-byte packets"
    );
    assert!(
        rx.iter().all(|m| m.port() == port.port_id()),
        "rx sets the input port"
    );
    assert_eq!(pool.in_use_count(), 32);

    // Send what came in back out: all accepted and freed by the driver.
    assert_eq!(port.tx_burst(0, &mut rx), 32);
    assert!(rx.is_empty());
    assert_eq!(pool.in_use_count(), 0);

    let s = port.stats().unwrap();
    assert_eq!(s.rx_packets, 32, "{s:?}");
    assert_eq!(s.tx_packets, 32, "{s:?}");
    // net_null (22.11) counts packets only, no bytes.
}

#[test]
fn queue_handles_poll_from_threads() {
    let eal = common::eal();
    let pool = Mempool::create(eal, "t_null1", 2047, 64).unwrap();
    let mut port = EthDev::by_name(eal, "net_null1").expect("net_null1");
    // net_null supports RSS: the requested hash functions it knows apply.
    let conf = PortConf {
        rx_queues: 2,
        tx_queues: 2,
        rss: Some(RssConf::ip_tcp_udp()),
        ..PortConf::default()
    };
    port.configure(&conf, pool).unwrap();
    let supported = port.info().unwrap().rss_offloads;
    assert_ne!(port.rss_hash_functions(), 0);
    assert_eq!(
        port.rss_hash_functions(),
        supported & conf.rss.as_ref().unwrap().hash_functions
    );
    port.start().unwrap();
    port.reset_stats().unwrap();

    let rxq0 = port.rx_queue(0).unwrap();
    assert_eq!(
        port.rx_queue(0).unwrap_err().errno(),
        libc::EBUSY,
        "one handle per queue"
    );
    assert_eq!(port.rx_queue(2).unwrap_err().errno(), libc::EINVAL);
    let rxq1 = port.rx_queue(1).unwrap();
    let txq0 = port.tx_queue(0).unwrap();
    let txq1 = port.tx_queue(1).unwrap();
    std::thread::scope(|s| {
        for (mut rxq, mut txq) in [(rxq0, txq0), (rxq1, txq1)] {
            s.spawn(move || {
                let mut batch = Vec::new();
                for _ in 0..100 {
                    assert_eq!(rxq.rx_burst(&mut batch, 32), 32);
                    assert_eq!(txq.tx_burst(&mut batch), 32);
                }
            });
        }
    });
    // Handles are gone: the queues can be claimed again.
    drop(port.rx_queue(0).unwrap());
    let s = port.stats().unwrap();
    assert_eq!(s.rx_packets, 6400, "{s:?}");
    assert_eq!(s.tx_packets, 6400, "{s:?}");
    assert_eq!(s.queues.len(), 2);
    assert_eq!(s.queues[0].rx_packets, 3200, "{s:?}");
    assert_eq!(s.queues[1].rx_packets, 3200, "{s:?}");
    assert_eq!(pool.in_use_count(), 0);
}

#[test]
fn missing_device_is_a_clear_error() {
    let eal = common::eal();
    let err = EthDev::by_name(eal, "net_nosuch0").unwrap_err();
    assert_eq!(err.call(), "rte_eth_dev_get_port_by_name");
    assert_eq!(err.errno(), libc::ENODEV);
    let msg = err.to_string();
    assert!(msg.contains("net_nosuch0"), "{msg}");
    assert!(msg.contains("--vdev"), "{msg}");
    assert!(msg.contains("net_ring0"), "lists the known ports: {msg}");
    assert!(dpdk_bindings::ethdev::ports(eal)
        .iter()
        .any(|(_, n)| n == "net_null0"));
}

#[test]
fn port_misuse_is_an_error() {
    let eal = common::eal();
    let pool = Mempool::create(eal, "t_misuse", 255, 0).unwrap();
    // A port opened only here (see VDEVS); tests run in parallel.
    let mut port = EthDev::by_name(eal, "net_ring2").expect("net_ring2");
    assert_eq!(
        EthDev::by_name(eal, "net_ring2").unwrap_err().errno(),
        libc::EBUSY
    );
    assert!(port.start().is_err(), "start before configure");
    assert!(port.rx_queue(0).is_err(), "queue handle before start");
    let max = port.info().unwrap().max_rx_queues;
    let too_many = PortConf {
        rx_queues: max + 1,
        ..PortConf::default()
    };
    let err = port.configure(&too_many, pool).unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
    let zero = PortConf {
        rx_queues: 0,
        ..PortConf::default()
    };
    assert!(port.configure(&zero, pool).is_err());
    port.configure(&PortConf::default(), pool).unwrap();
    port.start().unwrap();
    assert!(
        port.configure(&PortConf::default(), pool).is_err(),
        "configure while started"
    );
    drop(port);
    // Dropping released (and stopped) it: it can be opened again.
    let port = EthDev::by_name(eal, "net_ring2").expect("reopen");
    assert!(!port.is_started());
}
