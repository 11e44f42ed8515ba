/*
 * ferrovs C shim: real (linkable) functions for DPDK's `static inline`
 * fast-path API, which bindgen cannot bind. Prefix: ferrovs_.
 */
#ifndef FERROVS_DPDK_SHIM_H
#define FERROVS_DPDK_SHIM_H

#include <stdint.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

/* rte_errno is a per-lcore (thread-local) variable behind a macro. */
int ferrovs_rte_errno(void);
void ferrovs_rte_errno_set(int value);

unsigned ferrovs_rte_lcore_id(void);

uint16_t ferrovs_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                                  struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t ferrovs_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                                  struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

struct rte_mbuf *ferrovs_rte_pktmbuf_alloc(struct rte_mempool *mp);
int ferrovs_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                                   unsigned count);
void ferrovs_rte_pktmbuf_free(struct rte_mbuf *m);

/* rte_pktmbuf_mtod(m, void *): start of the first segment's data. */
void *ferrovs_rte_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t ferrovs_rte_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t ferrovs_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t ferrovs_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint16_t ferrovs_rte_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t ferrovs_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
char *ferrovs_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *ferrovs_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *ferrovs_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int ferrovs_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t ferrovs_rte_mbuf_port(const struct rte_mbuf *m);
uint32_t ferrovs_rte_mbuf_rss_hash(const struct rte_mbuf *m);
uint64_t ferrovs_rte_mbuf_ol_flags(const struct rte_mbuf *m);

void ferrovs_rte_prefetch0(const void *p);

/* RSS hash-function sets (RTE_BIT64 macros bindgen cannot evaluate). */
uint64_t ferrovs_rss_hf_ip(void);
uint64_t ferrovs_rss_hf_tcp(void);
uint64_t ferrovs_rss_hf_udp(void);

#endif
