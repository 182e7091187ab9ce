//! The data of a load-generator event, `lg:SEQ:STAMP:padding`: written by the publishers (HTTP
//! API or client events) and read back by subscribers without parsing the JSON around it.

/// The data string of sequence `seq` stamped with its intended send time `intended`, padded
/// with `x` to `size` bytes.
pub fn delivery_data(seq: u32, intended: u64, size: usize) -> String {
    let mut data = format!("lg:{seq}:{intended}:");
    if data.len() < size {
        data.extend(std::iter::repeat_n('x', size - data.len()));
    }
    data
}

/// Marker that starts the data of a load-generator event: `lg:SEQ:STAMP:`.
const DELIVERY_MARKER: &[u8] = b"\"lg:";

/// Reads `(sequence, intended send time)` out of a delivered event without parsing its JSON: the
/// data string is `lg:SEQ:STAMP:padding`, written by the publisher.
pub fn parse_delivery(text: &[u8]) -> Option<(u32, u64)> {
    let at = text
        .windows(DELIVERY_MARKER.len())
        .position(|w| w == DELIVERY_MARKER)?;
    let rest = text.get(at + DELIVERY_MARKER.len()..)?;
    let (seq, rest) = split_number(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (stamp, _) = split_number(rest)?;
    Some((u32::try_from(seq).ok()?, stamp))
}

fn split_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 20 {
        return None;
    }
    let number = std::str::from_utf8(&bytes[..len]).ok()?.parse().ok()?;
    Some((number, &bytes[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_parse_without_json() {
        type Case<'a> = (&'a [u8], Option<(u32, u64)>);
        let cases: &[Case] = &[
            (
                br#"{"event":"seq","channel":"loadgen-1","data":"lg:5:123456:xxxx"}"#,
                Some((5, 123_456)),
            ),
            (
                br#"{"event":"seq","data":"lg:1:9:","channel":"c"}"#,
                Some((1, 9)),
            ),
            (br#"{"event":"seq","data":"lg:1"}"#, None),
            (br#"{"event":"seq","data":"lg::5:"}"#, None),
            (br#"{"event":"pusher:pong","data":{}}"#, None),
            (br#"{"data":"lg:99999999999:1:"}"#, None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_delivery(text),
                *want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
