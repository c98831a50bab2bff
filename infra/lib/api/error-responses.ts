/**
 * API Gateway's own answers — a refused token, stage throttling, a body over 10 MB, an integration timeout,
 * any other 4xx/5xx it produces before or instead of a function — in the project's error shape,
 * `{"error": {"type": ..., "message": ...}}`, the one every function answers with, so a client parses a
 * single shape whoever refused it.
 */
import * as apigw from 'aws-cdk-lib/aws-apigateway';

export interface GatewayErrorResponse {
  /** Construct id under the RestApi (Default4xx/Default5xx keep the logical ids they had for CORS). */
  readonly id: string;
  readonly responseType: apigw.ResponseType;
  /** Unset for the DEFAULT_* types: they keep the status API Gateway chose (400, 403, 404, 500, 502, ...). */
  readonly statusCode?: string;
  /** `error.type`, as the functions name it (metering-core's ApiError::error_type). */
  readonly errorType: string;
}

export const GATEWAY_ERROR_RESPONSES: readonly GatewayErrorResponse[] = [
  { id: 'Unauthorized', responseType: apigw.ResponseType.UNAUTHORIZED, statusCode: '401', errorType: 'authentication_error' },
  { id: 'AccessDenied', responseType: apigw.ResponseType.ACCESS_DENIED, statusCode: '403', errorType: 'permission_error' },
  { id: 'Throttled', responseType: apigw.ResponseType.THROTTLED, statusCode: '429', errorType: 'rate_limit_error' },
  { id: 'RequestTooLarge', responseType: apigw.ResponseType.REQUEST_TOO_LARGE, statusCode: '413', errorType: 'request_too_large' },
  { id: 'IntegrationTimeout', responseType: apigw.ResponseType.INTEGRATION_TIMEOUT, statusCode: '504', errorType: 'timeout_error' },
  { id: 'Default4xx', responseType: apigw.ResponseType.DEFAULT_4XX, errorType: 'invalid_request_error' },
  { id: 'Default5xx', responseType: apigw.ResponseType.DEFAULT_5XX, errorType: 'api_error' },
];

/**
 * The body template. `$context.error.messageString` is API Gateway's message already quoted as a JSON string
 * (`"Unauthorized"`), so it goes in without quotes of ours; gateway response templates have no `$util` to
 * escape `$context.error.message` with.
 */
export function errorBodyTemplate(errorType: string): string {
  return `{"error":{"type":"${errorType}","message":$context.error.messageString}}`;
}

/**
 * Adds every response of GATEWAY_ERROR_RESPONSES to the API. A customized type does not inherit DEFAULT_4XX's
 * headers, so the CORS origin (when there is exactly one) goes on each.
 */
export function addErrorResponses(restApi: apigw.RestApi, corsAllowOrigin?: string): apigw.GatewayResponse[] {
  const headers: Record<string, string> = {
    'Content-Type': "'application/json'",
    ...(corsAllowOrigin ? { 'Access-Control-Allow-Origin': `'${corsAllowOrigin}'` } : {}),
  };
  return GATEWAY_ERROR_RESPONSES.map((response) =>
    restApi.addGatewayResponse(response.id, {
      type: response.responseType,
      statusCode: response.statusCode,
      responseHeaders: headers,
      templates: { 'application/json': errorBodyTemplate(response.errorType) },
    }),
  );
}
