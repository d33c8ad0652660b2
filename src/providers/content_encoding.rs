//! Compressed provider responses: Sluice never asks for compression, but providers and proxies
//! in between may compress anyway (`Content-Encoding: gzip`). The forwarder reads every body
//! through a [`BodyDecoder`] (Pingora's `request_filter`, while it reads the upstream
//! response), so the codecs see the JSON or SSE text they parse, and the client gets it
//! uncompressed, whatever it asked for. Before this, the body went out compressed with the
//! header stripped: unreadable.

use std::io::Write;

/// Compressed input is decoded this many bytes at a time (see [`BodyDecoder::decode`]).
const DECODE_SLICE: usize = 512;

/// Decodes one response body as its chunks arrive.
pub enum BodyDecoder {
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    /// HTTP's `deflate` is the zlib format (RFC 9110 8.4.1.2).
    Deflate(Box<flate2::write::ZlibDecoder<Vec<u8>>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl std::fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyDecoder::Gzip(_) => "BodyDecoder::Gzip",
            BodyDecoder::Deflate(_) => "BodyDecoder::Deflate",
            BodyDecoder::Brotli(_) => "BodyDecoder::Brotli",
        })
    }
}

impl BodyDecoder {
    /// The decoder for a `Content-Encoding` value: `Ok(None)` for none (or `identity`),
    /// `Err` naming an encoding Sluice cannot decode (or several stacked).
    pub fn for_encoding(value: Option<&[u8]>) -> Result<Option<BodyDecoder>, String> {
        let Some(value) = value else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(value);
        let name = text.trim().to_ascii_lowercase();
        Ok(Some(match name.as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => {
                BodyDecoder::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new())))
            }
            "deflate" => {
                BodyDecoder::Deflate(Box::new(flate2::write::ZlibDecoder::new(Vec::new())))
            }
            "br" => {
                BodyDecoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096)))
            }
            _ => return Err(name),
        }))
    }

    /// Decodes `chunk`, appending what it yields to `out`, all of it (an SSE event is not
    /// held back until the next chunk). Fails once `out` would grow past `max_out` bytes: a
    /// few kilobytes can expand a thousandfold (a decompression bomb), so the input is fed in
    /// small slices and the output checked after each.
    pub fn decode(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> std::io::Result<()> {
        for slice in chunk.chunks(DECODE_SLICE) {
            let produced = match self {
                BodyDecoder::Gzip(d) => {
                    d.write_all(slice)?;
                    d.flush()?;
                    d.get_mut()
                }
                BodyDecoder::Deflate(d) => {
                    d.write_all(slice)?;
                    d.flush()?;
                    d.get_mut()
                }
                BodyDecoder::Brotli(d) => {
                    d.write_all(slice)?;
                    d.flush()?;
                    d.get_mut()
                }
            };
            if out.len() + produced.len() > max_out {
                return Err(std::io::Error::other(format!(
                    "the decompressed body is larger than {max_out} bytes"
                )));
            }
            out.append(produced);
        }
        Ok(())
    }

    /// The body ended: whatever is left, appended to `out`; an error for a truncated stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let produced = match self {
            BodyDecoder::Gzip(d) => {
                d.try_finish()?;
                d.get_mut()
            }
            BodyDecoder::Deflate(d) => {
                d.try_finish()?;
                d.get_mut()
            }
            BodyDecoder::Brotli(d) => {
                // `close` fails for a stream that did not end (flush alone accepts it).
                d.close()?;
                d.get_mut()
            }
        };
        out.append(produced);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_in(decoder: &mut BodyDecoder, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in data.chunks(chunk) {
            decoder.decode(c, &mut out, usize::MAX).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn decodes_gzip_deflate_and_brotli_in_any_chunks() {
        let text =
            br#"{"id":"x","choices":[{"message":{"content":"hello hello hello"}}]}"#.repeat(50);
        let gz = gzip(&text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        let zlib = z.finish().unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&text).unwrap();
        }
        for (encoding, body) in [("gzip", &gz), ("deflate", &zlib), ("br", &br)] {
            for chunk in [1, 7, 4096] {
                let mut d = BodyDecoder::for_encoding(Some(encoding.as_bytes()))
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    decode_in(&mut d, body, chunk),
                    text,
                    "{encoding} by {chunk}"
                );
            }
        }
        assert!(BodyDecoder::for_encoding(None).unwrap().is_none());
        assert!(
            BodyDecoder::for_encoding(Some(b"identity"))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            BodyDecoder::for_encoding(Some(b"zstd")).unwrap_err(),
            "zstd"
        );
        assert!(BodyDecoder::for_encoding(Some(b"gzip, br")).is_err());
    }

    #[test]
    fn a_truncated_body_is_an_error() {
        let gz = gzip(b"some text that is long enough to matter");
        let mut d = BodyDecoder::for_encoding(Some(b"gzip")).unwrap().unwrap();
        let mut out = Vec::new();
        d.decode(&gz[..gz.len() / 2], &mut out, usize::MAX).unwrap();
        assert!(d.finish(&mut out).is_err());
    }

    /// Each chunk's text comes out with the chunk (an SSE event is not held back until the
    /// next one arrives).
    #[test]
    fn a_chunk_is_decoded_at_once() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"data: one\n\n").unwrap();
        e.flush().unwrap();
        let first = e.get_ref().len();
        e.write_all(b"data: two\n\n").unwrap();
        let all = e.finish().unwrap();
        let mut d = BodyDecoder::for_encoding(Some(b"gzip")).unwrap().unwrap();
        let mut out = Vec::new();
        d.decode(&all[..first], &mut out, usize::MAX).unwrap();
        assert_eq!(out, b"data: one\n\n");
    }

    /// A bomb (a megabyte of zeros in about a kilobyte) stops at the limit.
    #[test]
    fn decoded_size_is_bounded() {
        let bomb = gzip(&vec![0u8; 1024 * 1024]);
        assert!(bomb.len() < 4096);
        let mut d = BodyDecoder::for_encoding(Some(b"gzip")).unwrap().unwrap();
        let mut out = Vec::new();
        let e = d.decode(&bomb, &mut out, 64 * 1024).unwrap_err();
        assert!(e.to_string().contains("larger than 65536"), "{e}");
        assert!(out.len() <= 64 * 1024);
    }
}
