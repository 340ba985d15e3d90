//! A JSON request body that may be left out: `POST /auth/refresh` with no body at all
//! (as a browser's `fetch` sends it in cookie transport) is `None`, where poem-openapi's
//! `Json` would refuse a request without a `Content-Type` with 415.

use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::payload::{Json, Payload as _};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

/// `Some` body when the request has one, `None` when it has neither a body nor a
/// `Content-Type`. A body is read as [`Json`] reads it, with the same refusals, into `T`;
/// the document shows `D`, which may be stricter than what `T` parses (a field that only
/// some requests may leave out, as the route's description then says).
pub(super) struct OptionalJson<T, D = T>(pub(super) Option<T>, PhantomData<D>);

impl<'a, T: ParseFromJSON + ToJSON, D: ParseFromJSON + ToJSON> ApiExtractor<'a>
    for OptionalJson<T, D>
{
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Json<D> as ApiExtractor<'a>>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: Json::<D>::CONTENT_TYPE,
                schema: Json::<D>::schema_ref(),
            }],
            required: false,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if request.content_type().is_none() {
            let bytes = body.take()?.into_bytes().await?;
            if bytes.is_empty() {
                return Ok(Self(None, PhantomData));
            }
            // Something was sent without saying what: refused as `Json` refuses it.
            *body = RequestBody::new(poem::Body::from(bytes));
        }
        let Json(value) =
            <Json<T> as ApiExtractor<'a>>::from_request(request, body, options).await?;
        Ok(Self(Some(value), PhantomData))
    }
}
