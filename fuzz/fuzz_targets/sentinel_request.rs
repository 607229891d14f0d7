//! Whatever a client sends to the Sentinel-compatible endpoint, the request parser returns
//! requests, "read more" or a typed error: it never panics, never claims more bytes than it
//! was given or more than `max` bytes of arguments, and it parses the same requests however
//! the bytes arrive (all at once with a cursor, or a few bytes per read with the answered
//! ones drained after each read, as the endpoint does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomguard::sentinel::{ProtocolError, parse_request};

type Args = Vec<Vec<u8>>;

/// Every request at the front of `buf`, parsed with a cursor: the requests, the bytes they
/// took, and the error that stopped the parse, if any.
fn parse_all(buf: &[u8], max: usize) -> (Vec<Args>, usize, Option<ProtocolError>) {
    let (mut requests, mut cursor) = (Vec::new(), 0);
    loop {
        match parse_request(&buf[cursor..], max) {
            Ok(Some((args, used))) => {
                assert!(used > 0 && cursor + used <= buf.len(), "used {used} of {}", buf.len() - cursor);
                assert!(args.iter().map(Vec::len).sum::<usize>() <= max, "arguments above the cap");
                requests.push(args);
                cursor += used;
            }
            Ok(None) => return (requests, cursor, None),
            Err(e) => return (requests, cursor, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the cap (small caps reach the size checks) and the read size.
    let Some((&knob, stream)) = data.split_first() else { return };
    let max = 1 + usize::from(knob) * 4;
    let (at_once, _, error) = parse_all(stream, max);

    let (mut buf, mut in_reads, mut read_error) = (Vec::new(), Vec::new(), None);
    for read in stream.chunks(1 + usize::from(knob % 7)) {
        buf.extend_from_slice(read);
        let (requests, used, e) = parse_all(&buf, max);
        in_reads.extend(requests);
        buf.drain(..used);
        if e.is_some() {
            read_error = e;
            break;
        }
    }
    assert_eq!(in_reads, at_once, "the requests depend on how the bytes arrive");
    assert_eq!(read_error, error, "the error depends on how the bytes arrive");
});
