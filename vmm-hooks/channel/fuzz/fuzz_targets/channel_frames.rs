//! The byte stream tvpd reads from a hostile tvp-vmm (seeds: one frame of every
//! `VmmMessage`, as `write_frame` writes them), read frame after frame with
//! `read_frame::<VmmMessage>` until it fails; with the first byte odd, as tvp-vmm reads
//! `HostMessage`s. Invariants beyond no panic: reading stops at the first bad frame
//! without consuming more than the stream holds, and every message read is re-framed by
//! `write_frame` into a frame that reads back as the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use tvp_vmm_channel::{read_frame, write_frame, HostMessage, VmmMessage, MAX_FRAME_LEN};

fn drain<M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(mut stream: &[u8]) {
    for _ in 0..64 {
        let before = stream.len();
        let Ok(m) = read_frame::<_, M>(&mut stream) else {
            return;
        };
        assert!(stream.len() < before);
        let mut buf = Vec::new();
        write_frame(&mut buf, &m).unwrap();
        let n = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert!((1..=MAX_FRAME_LEN).contains(&n) && buf.len() == 4 + n);
        let again: M = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(again, m, "message does not survive re-framing");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, stream)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        drain::<VmmMessage>(stream);
    } else {
        drain::<HostMessage>(stream);
    }
});
