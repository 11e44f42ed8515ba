//! Finds the system DPDK through pkg-config, generates the FFI with bindgen
//! (allowlisted to the APIs ferrovs uses) and compiles the C shim for DPDK's
//! `static inline` fast-path functions.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/wrapper.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "\nerror: dpdk-bindings needs the system DPDK (>= 22.11) and pkg-config could not find it:\n\
                 {e}\n\n\
                 Install it with: apt-get install libdpdk-dev pkg-config libclang-dev\n\
                 (or set PKG_CONFIG_PATH to the directory holding libdpdk.pc).\n\
                 The crate is not a default workspace member: a plain `cargo build` does not need DPDK.\n"
            );
            panic!("libdpdk not found by pkg-config: install libdpdk-dev");
        }
    };

    // The compiler flags DPDK's packager chose (-include rte_config.h,
    // -march=..., include paths); the shim and bindgen both need them.
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let cflags = Command::new(pkg_config)
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut clang_args: Vec<String> = cflags.split_whitespace().map(str::to_owned).collect();
    for inc in &dpdk.include_paths {
        clang_args.push(format!("-I{}", inc.display()));
    }
    if !clang_args.iter().any(|a| a == "rte_config.h") {
        clang_args.push("-include".into());
        clang_args.push("rte_config.h".into());
    }

    let mut build = cc::Build::new();
    build.file("shim/shim.c").opt_level(2);
    for arg in &clang_args {
        build.flag(arg);
    }
    build.flag_if_supported("-Wno-unused-parameter");
    build.compile("ferrovs_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/wrapper.h")
        .clang_args(&clang_args)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_mbuf_.*")
        .allowlist_function("rte_pktmbuf_.*")
        .allowlist_function("rte_mempool_.*")
        .allowlist_function("rte_ring_.*")
        .allowlist_function("rte_flow_.*")
        .allowlist_function("rte_lcore_.*")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_thread_unregister")
        .allowlist_function("rte_strerror")
        .allowlist_function("ferrovs_.*")
        .allowlist_type("rte_eth_.*")
        .allowlist_type("rte_mbuf.*")
        .allowlist_type("rte_mempool.*")
        .allowlist_type("rte_ring.*")
        .allowlist_type("rte_flow.*")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_ETHDEV_QUEUE_STAT_CNTRS")
        .allowlist_var("RTE_MBUF_DEFAULT_.*")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MEMPOOL_.*")
        .allowlist_var("RTE_MAX_LCORE")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("LCORE_ID_ANY")
        // Packed structs holding aligned members cannot be expressed in Rust.
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate_comments(false)
        .generate()
        .expect("bindgen failed on the DPDK headers (is libclang installed? apt-get install libclang-dev)");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(&out).expect("writing bindings.rs");
}
