import type { Config } from 'tailwindcss';

export default {
  content: ['./index.html', './src/**/*.{ts,tsx}'],
  darkMode: 'media',
  theme: {
    extend: {
      fontFamily: {
        sans: ['Inter', 'system-ui', '"Noto Sans CJK KR"', '"Noto Sans KR"', 'NanumGothic', 'sans-serif'],
      },
    },
  },
  plugins: [],
} satisfies Config;
