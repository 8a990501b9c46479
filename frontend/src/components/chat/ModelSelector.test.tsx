import { render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { useLangStore } from '../../i18n';
import { ModelSelector, type ModelOptionInfo } from './ModelSelector';

const models: Record<string, ModelOptionInfo> = {
  'deepseek-r1-distill-qwen-14b': { name: 'DeepSeek R1 Distill Qwen 14B', description: '최신 DeepSeek R1 distilled 모델' },
  'phi3-mini': { name: 'Phi-3 Mini 3.8B', description: 'Microsoft 경량 모델' },
  'llama3-70b-instruct': {
    name: 'Llama 3 70B Instruct',
    compatible: false,
    reasons: ['needs 140 GB of GPU memory, found 48 GB'],
  },
};

beforeEach(() => useLangStore.setState({ lang: 'ko' }));

describe('ModelSelector', () => {
  it('shows the current model and lists every profile when opened', async () => {
    const user = userEvent.setup();
    render(<ModelSelector models={models} currentModel="deepseek-r1-distill-qwen-14b" onModelChange={vi.fn()} isLoading={false} />);
    expect(screen.getByTestId('current-model')).toHaveTextContent('DeepSeek R1 Distill Qwen 14B');
    await user.click(screen.getByTestId('model-selector'));
    const list = screen.getByRole('listbox');
    expect(within(list).getAllByTestId('model-option')).toHaveLength(3);
    expect(within(list).getByText('Phi-3 Mini 3.8B')).toBeInTheDocument();
  });

  it('calls onModelChange with the profile id of the picked model', async () => {
    const user = userEvent.setup();
    const onModelChange = vi.fn();
    render(<ModelSelector models={models} currentModel="deepseek-r1-distill-qwen-14b" onModelChange={onModelChange} isLoading={false} />);
    await user.click(screen.getByRole('button'));
    await user.click(screen.getByText('Phi-3 Mini 3.8B'));
    expect(screen.queryByRole('listbox')).not.toBeInTheDocument();
    // it changes the model of every user: asked first
    expect(onModelChange).not.toHaveBeenCalled();
    expect(screen.getByTestId('confirm-dialog')).toHaveTextContent('Phi-3 Mini 3.8B');
    await user.click(screen.getByTestId('confirm-button'));
    expect(onModelChange).toHaveBeenCalledWith('phi3-mini');
    expect(screen.queryByTestId('confirm-dialog')).not.toBeInTheDocument();
  });

  it('switches nothing when the confirmation is cancelled', async () => {
    const user = userEvent.setup();
    const onModelChange = vi.fn();
    render(<ModelSelector models={models} currentModel="deepseek-r1-distill-qwen-14b" onModelChange={onModelChange} isLoading={false} />);
    await user.click(screen.getByTestId('model-selector'));
    await user.click(screen.getByText('Phi-3 Mini 3.8B'));
    await user.click(screen.getByText('취소'));
    expect(screen.queryByTestId('confirm-dialog')).not.toBeInTheDocument();
    expect(onModelChange).not.toHaveBeenCalled();
  });

  it('names the target while a switch runs', () => {
    render(
      <ModelSelector models={models} currentModel="deepseek-r1-distill-qwen-14b" onModelChange={vi.fn()} isLoading switchTarget="phi3-mini" />,
    );
    expect(screen.getByTestId('switching-label')).toHaveTextContent('Phi-3 Mini 3.8B(으)로 전환 중...');
  });

  it('gives the incompatibility reasons in Korean', async () => {
    const user = userEvent.setup();
    const gpu = { 'tp2': { name: 'TP2 model', compatible: false, reasons: ['needs 2 GPUs (tensor parallel 2), found 0'] } };
    render(<ModelSelector models={gpu} currentModel={null} onModelChange={vi.fn()} isLoading={false} />);
    await user.click(screen.getByTestId('model-selector'));
    await user.hover(screen.getByTestId('model-option-tp2'));
    expect(screen.getByRole('tooltip')).toHaveTextContent('GPU 2개가 필요합니다 (텐서 병렬 2), 감지된 GPU: 0개');
  });

  it('is locked and says 전환 중... while a switch runs', () => {
    render(<ModelSelector models={models} currentModel="deepseek-r1-distill-qwen-14b" onModelChange={vi.fn()} isLoading />);
    expect(screen.getByRole('button')).toBeDisabled();
    expect(screen.getByText('전환 중...')).toBeInTheDocument();
  });

  it('shows 전환 완료 after a switch, Switch complete in English', () => {
    const { rerender } = render(
      <ModelSelector models={models} currentModel="phi3-mini" onModelChange={vi.fn()} isLoading={false} result="success" />,
    );
    expect(screen.getByRole('status')).toHaveTextContent('전환 완료');
    useLangStore.setState({ lang: 'en' });
    rerender(<ModelSelector models={models} currentModel="phi3-mini" onModelChange={vi.fn()} isLoading={false} result="success" />);
    expect(screen.getByRole('status')).toHaveTextContent('Switch complete');
  });

  it('disables an incompatible profile and gives the reason on hover', async () => {
    const user = userEvent.setup();
    const onModelChange = vi.fn();
    render(<ModelSelector models={models} currentModel="phi3-mini" onModelChange={onModelChange} isLoading={false} />);
    await user.click(screen.getByTestId('model-selector'));
    const option = screen.getByTestId('model-option-llama3-70b-instruct');
    expect(option.className).toMatch(/\bdisabled\b/);
    expect(screen.getByTestId('model-option-phi3-mini').className).not.toMatch(/disabled/);
    expect(option).toHaveAttribute('aria-disabled', 'true');
    expect(screen.queryByText('현재 하드웨어로 실행할 수 없습니다')).not.toBeInTheDocument();
    await user.hover(option);
    expect(screen.getByRole('tooltip')).toHaveTextContent('현재 하드웨어로 실행할 수 없습니다');
    expect(screen.getByRole('tooltip')).toHaveTextContent('needs 140 GB of GPU memory, found 48 GB');
    await user.click(option);
    expect(onModelChange).not.toHaveBeenCalled();
  });
});
