/** One error type for everything the gateway (or the network) can answer with. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | null;
  /** seconds, from `Retry-After` (429, 503) */
  readonly retryAfter: number | null;
  readonly reasons: string[];
  /** `details` of the body: the reasons as data (e.g. why a profile cannot run) */
  readonly details: unknown[];

  constructor(
    status: number,
    code: string,
    message: string,
    opts: { requestId?: string | null; retryAfter?: number | null; reasons?: string[]; details?: unknown[] } = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.requestId = opts.requestId ?? null;
    this.retryAfter = opts.retryAfter ?? null;
    this.reasons = opts.reasons ?? [];
    this.details = opts.details ?? [];
  }
}

interface ErrorBody {
  error?: { code?: unknown; message?: unknown; request_id?: unknown; reasons?: unknown; details?: unknown };
}

/** The error inside an SSE `data: {"error": ...}` event or a JSON error body. */
export function errorFromBody(status: number, body: unknown, retryAfter: number | null = null): ApiError {
  const err = (body as ErrorBody | null)?.error;
  const code = typeof err?.code === 'string' ? err.code : status === 0 ? 'network_error' : `http_${status}`;
  const message = typeof err?.message === 'string' ? err.message : `HTTP ${status}`;
  const reasons = Array.isArray(err?.reasons) ? err.reasons.filter((r): r is string => typeof r === 'string') : [];
  const requestId = typeof err?.request_id === 'string' ? err.request_id : null;
  const details = Array.isArray(err?.details) ? (err.details as unknown[]) : [];
  return new ApiError(status, code, message, { requestId, retryAfter, reasons, details });
}

export function parseRetryAfter(value: string | null): number | null {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

export async function errorFromResponse(res: Response): Promise<ApiError> {
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  return errorFromBody(res.status, body, parseRetryAfter(res.headers.get('Retry-After')));
}

export function isAbortError(err: unknown): boolean {
  return err instanceof DOMException ? err.name === 'AbortError' : (err as { name?: string } | null)?.name === 'AbortError';
}
