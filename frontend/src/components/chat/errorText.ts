import type { ApiError } from '../../api/errors';
import type { Translate } from '../../i18n';
import { knownErrorCode, serverErrorText } from '../../i18n/serverErrors';

/** What the user reads for a failed answer (the wait included when the gateway gave one). */
export function describeError(t: Translate, error: ApiError, waitS: number | null): string {
  switch (error.code) {
    case 'rate_limited':
      return waitS ? t('errRateLimited', { s: waitS }) : t('errRateLimitedNoWait');
    case 'model_switching':
      return t('errModelSwitching', { s: waitS ?? error.retryAfter ?? 5 });
    case 'model_unavailable':
    case 'service_unavailable':
      return t('errModelUnavailable');
    case 'upstream_timeout':
      return t('errTimeout');
    case 'network_error':
      return t('errNetwork');
    default:
      if (knownErrorCode(error.code) && error.code !== 'upstream_error') return serverErrorText(t, error);
      return error.status >= 500 || error.code.startsWith('upstream')
        ? t('errUpstream', { m: error.message })
        : t('errGeneric', { m: error.message });
  }
}
