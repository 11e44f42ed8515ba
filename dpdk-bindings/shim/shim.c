#include "shim.h"

#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_prefetch.h>

int ferrovs_rte_errno(void) { return rte_errno; }
void ferrovs_rte_errno_set(int value) { rte_errno = value; }

unsigned ferrovs_rte_lcore_id(void) { return rte_lcore_id(); }

uint16_t ferrovs_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                                  struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
    return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t ferrovs_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                                  struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
    return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *ferrovs_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int ferrovs_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
                                   unsigned count)
{
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void ferrovs_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void *ferrovs_rte_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
uint16_t ferrovs_rte_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t ferrovs_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t ferrovs_rte_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint16_t ferrovs_rte_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t ferrovs_rte_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
char *ferrovs_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *ferrovs_rte_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *ferrovs_rte_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int ferrovs_rte_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t ferrovs_rte_mbuf_port(const struct rte_mbuf *m) { return m->port; }
uint32_t ferrovs_rte_mbuf_rss_hash(const struct rte_mbuf *m) { return m->hash.rss; }
uint64_t ferrovs_rte_mbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }

void ferrovs_rte_prefetch0(const void *p) { rte_prefetch0(p); }

uint64_t ferrovs_rss_hf_ip(void) { return RTE_ETH_RSS_IP; }
uint64_t ferrovs_rss_hf_tcp(void) { return RTE_ETH_RSS_TCP; }
uint64_t ferrovs_rss_hf_udp(void) { return RTE_ETH_RSS_UDP; }
