//! The chunked transfer coding (RFC 9112 7.1), decoded as bytes arrive.

use std::io;

use bytes::{Buf as _, Bytes, BytesMut};

use super::invalid;

/// The longest chunk-size line or trailer section accepted.
const MAX_LINE: usize = 8 * 1024;
/// The most trailer fields accepted.
const MAX_TRAILERS: usize = 64;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes of it left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// What the decoder got from the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The body is complete; the bytes after it are left in the buffer.
    End,
    NeedMore,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Self::Size
    }

    /// Decodes from the front of `buffer`, taking what it used off.
    pub(crate) fn decode(&mut self, buffer: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match *self {
                Self::Size => match httparse::parse_chunk_size(buffer) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        buffer.advance(used);
                        *self = Self::Trailers;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buffer.advance(used);
                        *self = Self::Data(size);
                    }
                    Ok(httparse::Status::Partial) if buffer.len() < MAX_LINE => return Ok(Decoded::NeedMore),
                    Ok(httparse::Status::Partial) | Err(_) => return Err(invalid("invalid chunk size")),
                },
                Self::Data(remaining) => {
                    if buffer.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(buffer.len());
                    let data = buffer.split_to(take).freeze();
                    let left = remaining - take as u64;
                    *self = if left == 0 { Self::DataEnd } else { Self::Data(left) };
                    return Ok(Decoded::Data(data));
                }
                Self::DataEnd => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buffer[..2] != b"\r\n" {
                        return Err(invalid("a chunk does not end with CRLF"));
                    }
                    buffer.advance(2);
                    *self = Self::Size;
                }
                Self::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                    return match httparse::parse_headers(buffer, &mut fields) {
                        Ok(httparse::Status::Complete((used, _))) => {
                            buffer.advance(used);
                            Ok(Decoded::End)
                        }
                        Ok(httparse::Status::Partial) if buffer.len() < MAX_LINE => Ok(Decoded::NeedMore),
                        Ok(httparse::Status::Partial) | Err(_) => Err(invalid("invalid trailer section")),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything decoded from `input` fed `step` bytes at a time.
    fn decode_in_steps(input: &[u8], step: usize) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut decoder = Decoder::new();
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buffer)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => return Ok((body, buffer.to_vec())),
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete"));
                    }
                    let next = (fed + step).min(input.len());
                    buffer.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_however_the_bytes_arrive() {
        let input = b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nExpires: never\r\n\r\nHTTP/1.1 200";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, rest) = decode_in_steps(input, step).unwrap();
            assert_eq!(body, b"hello, world", "step {step}");
            assert!(b"HTTP/1.1 200".starts_with(&rest), "step {step}: {rest:?}");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for input in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffffff\r\n",
        ] {
            let error = decode_in_steps(input, 3).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{input:?}");
        }
    }

    #[test]
    fn a_size_line_without_end_is_refused_at_the_limit() {
        let input = vec![b'1'; MAX_LINE + 10];
        let error = decode_in_steps(&input, 1024).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
