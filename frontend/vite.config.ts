/// <reference types="vitest/config" />
import { defineConfig, loadEnv } from 'vite';
import react from '@vitejs/plugin-react';

// In development the API is proxied to a gateway (VITE_PROXY_TARGET, default :8080) so the
// UI stays same-origin, exactly as when the gateway serves the built files.
export default defineConfig(({ mode }) => {
  const env = loadEnv(mode, process.cwd(), '');
  const target = env.VITE_PROXY_TARGET || 'http://127.0.0.1:8080';
  return {
    plugins: [react()],
    server: {
      port: Number(env.FRONTEND_PORT || 3000),
      proxy: {
        '/api': { target, changeOrigin: false },
        '/v1': { target, changeOrigin: false },
        '/health': { target, changeOrigin: false },
      },
    },
    build: {
      outDir: 'dist',
      sourcemap: false,
      chunkSizeWarningLimit: 900,
    },
    test: {
      environment: 'jsdom',
      setupFiles: ['./src/test/setup.ts'],
      include: ['src/**/*.test.{ts,tsx}'],
      css: false,
    },
  };
});
