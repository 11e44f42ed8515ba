//! Checks EAL arguments the way ferrovs will use them and lists the ports.
//!
//!   cargo run -p dpdk-bindings --example eal_check -- \
//!       -l 0 --no-huge -m 256 --no-pci --vdev net_null0 --vdev net_ring0
//!
//! Exit status 0 with one line per port, or 2 with the DPDK error.

use dpdk_bindings::{ethdev, Eal, EthDev};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let eal = match Eal::init(&args) {
        Ok(eal) => eal,
        Err(e) => {
            eprintln!("eal_check: {e}");
            std::process::exit(2);
        }
    };
    let ports = ethdev::ports(eal);
    println!(
        "EAL up: {} lcore(s), {} port(s)",
        eal.lcore_count(),
        ports.len()
    );
    for (id, name) in ports {
        let dev = match EthDev::by_name(eal, &name) {
            Ok(dev) => dev,
            Err(e) => {
                println!("port {id} {name}: {e}");
                continue;
            }
        };
        match (dev.info(), dev.link()) {
            (Ok(info), Ok(link)) => println!(
                "port {id} {name}: driver {} max queues rx {} tx {} rss {:#x} link {} {} Mbps",
                info.driver_name,
                info.max_rx_queues,
                info.max_tx_queues,
                info.rss_offloads,
                if link.up { "up" } else { "down" },
                link.speed_mbps
            ),
            (Err(e), _) | (_, Err(e)) => println!("port {id} {name}: {e}"),
        }
    }
}
