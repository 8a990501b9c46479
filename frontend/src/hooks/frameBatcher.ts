/**
 * Coalesces many updates into at most one per animation frame: a 5,000-token answer then
 * costs one React render per frame, not one per token.
 */
export function frameBatcher(flush: () => void): { schedule: () => void; cancel: () => void } {
  const raf: (cb: () => void) => number =
    typeof requestAnimationFrame === 'function'
      ? (cb) => requestAnimationFrame(cb)
      : (cb) => setTimeout(cb, 16) as unknown as number;
  const caf: (id: number) => void =
    typeof cancelAnimationFrame === 'function' ? cancelAnimationFrame : (id) => clearTimeout(id);
  let handle: number | null = null;
  return {
    schedule: () => {
      if (handle !== null) return;
      handle = raf(() => {
        handle = null;
        flush();
      });
    },
    cancel: () => {
      if (handle !== null) caf(handle);
      handle = null;
    },
  };
}
