//! A `multipart/form-data` request body (`POST /v1/audio/transcriptions`) seen as a
//! [`RequestView`]: the `model` field's value and where it sits, so the forwarder can route the
//! request and splice the deployment's model in without touching the rest (the audio file).

use crate::error::ApiError;
use crate::request::{RequestView, Shape};

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

/// Reads the form's text fields the gateway acts on (`model`, `stream`) and whether it has a
/// `file`. Errors are 400s naming what is wrong.
pub fn form_view(body: &[u8], content_type: &str) -> Result<RequestView, ApiError> {
    let boundary = boundary(content_type).ok_or_else(|| {
        ApiError::bad_request(
            "this route takes a multipart/form-data body (Content-Type: multipart/form-data; boundary=...)",
        )
    })?;
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let starts: Vec<usize> = finder.find_iter(body).collect();
    let mut view = RequestView {
        object_end: body.len(),
        form: true,
        ..RequestView::default()
    };
    for pair in starts.windows(2) {
        let part = &body[pair[0] + delimiter.len()..pair[1]];
        let offset = pair[0] + delimiter.len();
        let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..head_end]);
        let Some(name) = field_name(&head) else {
            continue;
        };
        // The value runs to the CRLF before the next delimiter.
        let value_start = head_end + 4;
        let value_end = part.len().saturating_sub(2).max(value_start);
        let value = &part[value_start..value_end];
        match name.as_str() {
            "model" => {
                let text = std::str::from_utf8(value).map_err(|_| {
                    ApiError::bad_request("`model` must be text").with_param("model")
                })?;
                view.model = Some(text.to_string());
                view.model_span = Some(offset + value_start..offset + value_end);
            }
            "stream" => view.stream = value == b"true",
            "file" => view.input = Shape::Text,
            _ => {}
        }
    }
    if starts.is_empty() {
        return Err(ApiError::bad_request(
            "the multipart body has no part with the boundary its Content-Type names",
        ));
    }
    Ok(view)
}

/// `name="..."` of a part's `Content-Disposition`.
fn field_name(head: &str) -> Option<String> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
    let at = line.find("name=\"")? + "name=\"".len();
    let rest = &line[at..];
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const FORM: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01--not-a-boundary\r\n--XyZ--\r\n";

    #[test]
    fn finds_the_model_and_splices_a_new_one_raw() {
        let view = form_view(FORM.as_bytes(), "multipart/form-data; boundary=XyZ").unwrap();
        assert_eq!(view.model.as_deref(), Some("whisper"));
        assert_eq!(view.input, Shape::Text);
        let out = view.with_model(&Bytes::from_static(FORM.as_bytes()), "whisper-1");
        let expected = FORM.replace("\r\n\r\nwhisper\r\n", "\r\n\r\nwhisper-1\r\n");
        assert_eq!(out, expected.as_bytes());
    }

    #[test]
    fn a_body_that_is_no_form_is_a_400() {
        assert!(form_view(b"{}", "application/json").is_err());
        assert!(form_view(b"{}", "multipart/form-data; boundary=Q").is_err());
        assert_eq!(
            boundary("multipart/form-data; charset=utf-8; boundary=\"a b\""),
            Some("a b")
        );
        let view = form_view(
            b"--Q\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--Q--",
            "multipart/form-data; boundary=Q",
        )
        .unwrap();
        assert!(view.model.is_none());
    }
}
