/** Wire types of the gateway API (gateway/app/schemas, docs/model-manager-api.md). */

export type Role = 'admin' | 'user';

export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
}

export interface UserOut {
  id: number;
  username: string;
  email: string | null;
  role: Role | string;
  disabled: boolean;
  requests_per_minute: number | null;
  max_concurrent_streams: number | null;
  tokens_per_day: number | null;
  created_at: string;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatRequestBody {
  messages: ChatMessage[];
  model?: string;
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
  stream?: boolean;
  conversation_id?: string;
  system_prompt?: string;
  regenerate?: boolean;
}

export interface ConversationSummary {
  id: string;
  title: string | null;
  model: string | null;
  created_at: string;
  updated_at: string;
  message_count: number;
  preview: string | null;
}

export interface ConversationPage {
  conversations: ConversationSummary[];
  next_cursor: string | null;
}

export type MessageStatus = 'complete' | 'partial' | 'error';

export interface MessageVariant {
  id: number;
  role: 'user' | 'assistant' | 'system';
  content: string;
  /** a reasoning model's chain of thought, stored apart from the answer */
  reasoning?: string | null;
  reasoning_ms?: number | null;
  model: string | null;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  status: MessageStatus | string;
  created_at: string;
}

export interface MessageOut extends MessageVariant {
  /** every answer of a regenerated turn (this one included); empty when there is one */
  variants?: MessageVariant[];
  /** this answer's place in `variants` */
  variant_index?: number;
}

export interface ConversationOut {
  id: string;
  title: string | null;
  system_prompt: string | null;
  model: string | null;
  created_at: string;
  updated_at: string;
}

export interface ConversationDetail extends ConversationOut {
  messages: MessageOut[];
}

export interface UserSettings {
  system_prompt: string | null;
  temperature: number | null;
  top_p: number | null;
  max_tokens: number | null;
  language: 'ko' | 'en' | string | null;
}

export interface UsageStats {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  /** status >= 400 except 499 */
  errors: number;
  /** client-closed requests (499): the user stopped or left */
  cancelled: number;
  errors_by_code: Record<string, number>;
  avg_ttft_ms: number | null;
  avg_latency_ms: number | null;
  /** percentiles over completed requests */
  p50_ttft_ms: number | null;
  p95_ttft_ms: number | null;
  p99_ttft_ms: number | null;
  p50_latency_ms: number | null;
  p95_latency_ms: number | null;
  p99_latency_ms: number | null;
}

export interface UsageGroup extends UsageStats {
  key: string | null;
}

export interface UsageReport {
  from: string;
  to: string;
  group_by: string;
  totals: UsageStats;
  groups: UsageGroup[];
}

// --- model manager --------------------------------------------------------------------------

export type ModelStatus = 'stopped' | 'starting' | 'loading' | 'running' | 'switching' | 'error';
export type SwitchPhase = 'stopping' | 'starting' | 'loading' | 'running' | 'rolling_back' | 'failed';

export interface HardwareRequirements {
  min_vram_gb?: number | null;
  recommended_vram_gb?: number | null;
  min_gpus?: number | null;
}

export interface ProfileView {
  id: string;
  name: string;
  model_id?: string;
  served_model_name?: string | null;
  description?: string | null;
  max_model_len?: number | null;
  tensor_parallel_size?: number | null;
  gpu_memory_utilization?: number | null;
  dtype?: string | null;
  quantization?: string | null;
  runtime?: string | null;
  aliases?: string[];
  hardware_requirements?: HardwareRequirements;
  compatible?: boolean;
  incompatible_reasons?: string[];
  /** the same reasons as data, one per reason (the UI words them in its language) */
  incompatible_details?: ReasonDetail[];
}

/** One incompatibility reason: a code and its numbers (gateway model_manager/compatibility.py). */
export interface ReasonDetail {
  code: string;
  [param: string]: unknown;
}

export interface GpuInfo {
  index: number;
  name: string;
  memory_total_gb: number;
  memory_used_gb: number;
  memory_free_gb: number;
  utilization_percent: number | null;
}

export interface HardwareInfo {
  gpu_count: number;
  total_vram_gb: number;
  available_vram_gb: number;
  gpus: GpuInfo[];
  source?: string;
  error?: string | null;
}

export interface SwitchState {
  target: string;
  previous: string | null;
  phase: SwitchPhase;
  started_at: string;
  finished_at: string | null;
  error: string | null;
  phases?: { phase: string; at: string }[];
}

export interface SwitchRecord {
  from_profile: string | null;
  to_profile: string;
  started_at: string;
  finished_at: string | null;
  duration_s: number | null;
  outcome: 'success' | 'rolled_back' | 'failed' | string;
  error: string | null;
}

export interface ModelStatusResponse {
  current_profile: string | null;
  status: ModelStatus;
  runtime?: string | null;
  served_model?: string | null;
  upstream_version?: string | null;
  available_profiles: Record<string, ProfileView>;
  hardware_info?: HardwareInfo | null;
  switch?: SwitchState | null;
  error?: string | null;
  hint?: string | null;
  log_tail?: string[];
  history?: SwitchRecord[];
  restarts?: number;
  /** false where the model servers are run by someone else (MODEL_RUNTIME=external, e.g. Kubernetes) */
  switching_enabled?: boolean;
}

export interface HardwareRecommendations {
  current_hardware: Partial<HardwareInfo>;
  recommended_profiles?: string[];
  compatible_profiles: string[];
  incompatible_profiles: string[];
  incompatible_reasons?: Record<string, string[]>;
  incompatible_details?: Record<string, ReasonDetail[]>;
}

export interface SwitchResponse {
  success: boolean;
  message: string;
  status: string;
  target?: string;
}
