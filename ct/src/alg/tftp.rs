//! TFTP (RFC 1350): a client sends a read (RRQ, opcode 1) or write (WRQ,
//! opcode 2) request to the server's port 69; the server answers from a
//! port of its own choosing, to the client's address and port. That
//! answer matches no connection (its source port is new), so the helper
//! expects it: a UDP connection from the server's address, any source
//! port, to the client's address and port, in the request's zone. As in
//! Linux's nf_conntrack_tftp, only requests in the original direction
//! announce; every other packet (data, acks, errors) is ignored.

/// TFTP opcodes that open a transfer.
pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;

/// Whether a UDP payload is a read or write request.
pub fn is_request(payload: &[u8]) -> bool {
    match payload.first_chunk::<2>() {
        Some(op) => matches!(u16::from_be_bytes(*op), OP_RRQ | OP_WRQ),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_only() {
        assert!(is_request(b"\x00\x01file\x00octet\x00"));
        assert!(is_request(b"\x00\x02file\x00octet\x00"));
        assert!(!is_request(b"\x00\x03\x00\x01data"), "DATA");
        assert!(!is_request(b"\x00\x04\x00\x01"), "ACK");
        assert!(!is_request(b"\x00"));
        assert!(!is_request(b""));
    }
}
