import { create } from 'zustand';
import { settingsApi } from '../api/endpoints';
import type { UserSettings } from '../api/types';

/** The user's defaults (GET/PUT /api/users/me/settings). */
interface SettingsState {
  defaults: UserSettings | null;
  load: () => Promise<UserSettings | null>;
  save: (settings: UserSettings) => Promise<void>;
}

export const useSettings = create<SettingsState>((set) => ({
  defaults: null,
  load: async () => {
    try {
      const defaults = await settingsApi.get();
      set({ defaults });
      return defaults;
    } catch {
      return null;
    }
  },
  save: async (settings) => {
    set({ defaults: await settingsApi.put(settings) });
  },
}));
