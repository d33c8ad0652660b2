//! How long the audio in an upload (`POST /v1/audio/transcriptions`) plays, read from the
//! multipart body as it goes by: the `file` part found, its first bytes kept and its length
//! counted. A transcription asked for as text (`response_format=text`, `srt`, `vtt`) reports no
//! duration, and per-second prices need one; LiteLLM measures the file too (with libsndfile).
//! Read from the headers of WAV (exact), FLAC (exact) and MP3 (exact with a Xing/Info frame
//! count, else from the first frame's bitrate, exact for constant-bitrate files); other formats
//! give `None`.

/// The file's first bytes kept for its headers (an MP3's ID3 tag with cover art can be large).
const HEAD: usize = 256 * 1024;
/// How far into the body the `file` part's header is looked for.
const MAX_SEARCH: usize = 1024 * 1024;

/// Measures the audio file of a multipart body fed to it in order.
pub struct FormAudio {
    delimiter: Vec<u8>,
    /// Bytes seen before the file part began (only while looking for it).
    before: Vec<u8>,
    /// The file part's first bytes.
    head: Vec<u8>,
    /// The file's bytes so far; `None` until its part began.
    length: Option<usize>,
    /// The end of the file was found (the next delimiter).
    ended: bool,
    /// The last bytes of the file so far, for a delimiter split between two reads.
    tail: Vec<u8>,
    gave_up: bool,
}

impl FormAudio {
    /// A measurer for a body with this `multipart/form-data` boundary.
    pub fn new(boundary: &str) -> FormAudio {
        FormAudio {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            before: Vec::new(),
            head: Vec::new(),
            length: None,
            ended: false,
            tail: Vec::new(),
            gave_up: false,
        }
    }

    /// Measures a whole body at once.
    pub fn of_body(body: &[u8], boundary: &str) -> Option<f64> {
        let mut audio = FormAudio::new(boundary);
        audio.feed(body);
        audio.seconds()
    }

    /// Reads the next bytes of the body.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.gave_up || self.ended {
            return;
        }
        let Some(length) = self.length else {
            self.before.extend_from_slice(bytes);
            if let Some(start) = file_start(&self.before) {
                let rest = self.before.split_off(start);
                self.before = Vec::new();
                self.length = Some(0);
                self.feed(&rest);
            } else if self.before.len() > MAX_SEARCH {
                self.gave_up = true;
                self.before = Vec::new();
            }
            return;
        };
        // The file ends at the next delimiter, which may straddle the previous read.
        let overlap = self.tail.len();
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(bytes);
        let (file_bytes, counted_too_many) = match memchr::memmem::find(&window, &self.delimiter) {
            Some(at) => {
                self.ended = true;
                // A delimiter begun in the previous read: those bytes were counted as file.
                (at.saturating_sub(overlap), overlap.saturating_sub(at))
            }
            None => (bytes.len(), 0),
        };
        let file_bytes = file_bytes.min(bytes.len());
        let length = length.saturating_sub(counted_too_many);
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(file_bytes);
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.length = Some(length + file_bytes);
        let keep = self.delimiter.len().saturating_sub(1).min(window.len());
        self.tail = window[window.len() - keep..].to_vec();
    }

    /// The audio's duration in seconds, when its format tells it.
    pub fn seconds(&self) -> Option<f64> {
        let length = self.length?;
        seconds_of(&self.head, length).filter(|s| s.is_finite() && *s >= 0.0)
    }
}

/// Where the `file` part's content begins in `body` (after its part header).
fn file_start(body: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&body[from..], b"name=\"file\"") {
        let name_at = from + at;
        // Only in a part header: the header ends with a blank line after it.
        let header_end = memchr::memmem::find(&body[name_at..], b"\r\n\r\n")?;
        let line_start = body[..name_at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if body[line_start..name_at]
            .to_ascii_lowercase()
            .starts_with(b"content-disposition:")
        {
            return Some(name_at + header_end + 4);
        }
        from = name_at + 1;
    }
    None
}

/// The duration of a file of `length` bytes that begins with `head`.
pub fn seconds_of(head: &[u8], length: usize) -> Option<f64> {
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        wav(head, length)
    } else if head.starts_with(b"fLaC") {
        flac(head)
    } else {
        mp3(head, length)
    }
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u32_be(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn wav(head: &[u8], length: usize) -> Option<f64> {
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let size = u32_le(head, at + 4)? as usize;
        let body = at + 8;
        if id == b"fmt " {
            byte_rate = u32_le(head, body + 8).filter(|r| *r > 0);
        } else if id == b"data" {
            let rate = f64::from(byte_rate?);
            // A streamed WAV leaves the size unset (0 or all ones): the rest of the file.
            let data = if size == 0 || size == u32::MAX as usize {
                length.saturating_sub(body)
            } else {
                size.min(length.saturating_sub(body))
            };
            return Some(data as f64 / rate);
        }
        at = body + size + (size & 1);
    }
    None
}

fn flac(head: &[u8]) -> Option<f64> {
    // The first metadata block is STREAMINFO: 10 bytes of block and frame sizes, then sample
    // rate (20 bits), channels (3), bits per sample (5) and total samples (36).
    if head.get(4)? & 0x7f != 0 {
        return None;
    }
    let info = head.get(8..8 + 18)?;
    let packed = u64::from_be_bytes(info[10..18].try_into().ok()?);
    let rate = (packed >> 44) as f64;
    let samples = (packed & 0xF_FFFF_FFFF) as f64;
    (rate > 0.0 && samples > 0.0).then(|| samples / rate)
}

fn mp3(head: &[u8], length: usize) -> Option<f64> {
    let mut at = 0;
    if head.starts_with(b"ID3") {
        let size = head
            .get(6..10)?
            .iter()
            .fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7f));
        let footer = if head.get(5)? & 0x10 != 0 { 10 } else { 0 };
        at = 10 + size + footer;
    }
    // The first frame header (sync, then a valid MPEG audio layer III header).
    let frame = (at..head.len().saturating_sub(4)).find(|&i| {
        head[i] == 0xff
            && head[i + 1] & 0xe0 == 0xe0
            && (head[i + 1] >> 1) & 3 == 1
            && (head[i + 1] >> 3) & 3 != 1
            && head[i + 2] >> 4 != 0
            && head[i + 2] >> 4 != 15
            && (head[i + 2] >> 2) & 3 != 3
    })?;
    let h = &head[frame..];
    let version = (h[1] >> 3) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    let mpeg1 = version == 3;
    const BITRATES_V1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const BITRATES_V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let bitrate = if mpeg1 {
        BITRATES_V1[usize::from(h[2] >> 4)]
    } else {
        BITRATES_V2[usize::from(h[2] >> 4)]
    };
    let rate_index = usize::from((h[2] >> 2) & 3);
    let sample_rate = match version {
        3 => [44100, 48000, 32000][rate_index],
        2 => [22050, 24000, 16000][rate_index],
        _ => [11025, 12000, 8000][rate_index],
    };
    let samples_per_frame = if mpeg1 { 1152.0 } else { 576.0 };
    let mono = h[3] >> 6 == 3;
    // A Xing/Info frame (variable bitrate files) counts the frames.
    let side_info = match (mpeg1, mono) {
        (true, false) => 32,
        (true, true) => 17,
        (false, false) => 17,
        (false, true) => 9,
    };
    let tag = 4 + side_info;
    if matches!(h.get(tag..tag + 4), Some(b"Xing" | b"Info")) && u32_be(h, tag + 4)? & 1 != 0 {
        let frames = f64::from(u32_be(h, tag + 8)?);
        return Some(frames * samples_per_frame / f64::from(sample_rate));
    }
    let audio = length.saturating_sub(frame) as f64;
    Some(audio * 8.0 / (f64::from(bitrate) * 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCM WAV header for `seconds` of audio at 16 kHz, mono, 16 bits, and its samples.
    pub fn wav_file(seconds: usize, data_size_field: Option<u32>) -> Vec<u8> {
        let data = 32_000 * seconds;
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF");
        f.extend_from_slice(&(36 + data as u32).to_le_bytes());
        f.extend_from_slice(b"WAVEfmt ");
        f.extend_from_slice(&16u32.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes()); // PCM
        f.extend_from_slice(&1u16.to_le_bytes()); // mono
        f.extend_from_slice(&16_000u32.to_le_bytes());
        f.extend_from_slice(&32_000u32.to_le_bytes()); // byte rate
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&16u16.to_le_bytes());
        f.extend_from_slice(b"data");
        f.extend_from_slice(&data_size_field.unwrap_or(data as u32).to_le_bytes());
        f.extend((0..data).map(|i| (i % 251) as u8));
        f
    }

    fn form(file: &[u8], file_last: bool) -> Vec<u8> {
        let mut body =
            b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n".to_vec();
        body.extend_from_slice(
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nContent-Type: audio/wav\r\n\r\n",
        );
        body.extend_from_slice(file);
        if !file_last {
            body.extend_from_slice(
                b"\r\n--B\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\ntext",
            );
        }
        body.extend_from_slice(b"\r\n--B--\r\n");
        body
    }

    #[test]
    fn wav_from_its_header_in_a_form_fed_in_any_pieces() {
        for file in [
            wav_file(3, None),
            wav_file(3, Some(0)),
            wav_file(3, Some(u32::MAX)),
        ] {
            for last in [true, false] {
                let body = form(&file, last);
                assert_eq!(FormAudio::of_body(&body, "B"), Some(3.0));
                for piece in [1, 7, 1000, 40_000] {
                    let mut audio = FormAudio::new("B");
                    body.chunks(piece).for_each(|c| audio.feed(c));
                    assert_eq!(audio.seconds(), Some(3.0), "pieces of {piece}, last {last}");
                }
            }
        }
        assert_eq!(
            FormAudio::of_body(b"--B\r\nno file here\r\n--B--", "B"),
            None
        );
    }

    #[test]
    fn flac_streaminfo() {
        let mut f = b"fLaC".to_vec();
        f.push(0x80); // last block, STREAMINFO
        f.extend_from_slice(&[0, 0, 34]);
        f.extend_from_slice(&[0x10, 0, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        // 44,100 Hz, 2 channels, 16 bits, 441,000 samples: 10 s.
        let packed: u64 = (44_100u64 << 44) | (1 << 41) | (15 << 36) | 441_000;
        f.extend_from_slice(&packed.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        assert_eq!(seconds_of(&f, 5000), Some(10.0));
    }

    #[test]
    fn mp3_constant_bitrate_and_xing_frame_counts() {
        // MPEG-1 layer III, 128 kbps, 44.1 kHz, stereo, after a small ID3v2 tag.
        let mut f = b"ID3\x04\x00\x00\x00\x00\x00\x0a".to_vec();
        f.extend_from_slice(&[0; 10]);
        let frame_at = f.len();
        f.extend_from_slice(&[0xff, 0xfb, 0x90, 0x00]);
        f.extend_from_slice(&[0; 400]);
        // 160,000 bytes of audio at 128 kbps: 10 s.
        let length = frame_at + 160_000;
        let s = seconds_of(&f, length).unwrap();
        assert!((s - 10.0).abs() < 1e-9, "{s}");
        // The same with an Info frame counting 383 frames of 1152 samples at 44.1 kHz.
        let tag = frame_at + 4 + 32;
        f[tag..tag + 4].copy_from_slice(b"Info");
        f[tag + 4..tag + 8].copy_from_slice(&1u32.to_be_bytes());
        f[tag + 8..tag + 12].copy_from_slice(&383u32.to_be_bytes());
        let s = seconds_of(&f, length).unwrap();
        assert!((s - 383.0 * 1152.0 / 44_100.0).abs() < 1e-9, "{s}");
        assert_eq!(seconds_of(b"OggS\0\0\0\0", 100), None, "no MP3 frame");
    }
}
